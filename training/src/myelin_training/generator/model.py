"""Language models for the generator family: a decoder-only Transformer (GPT) and a GRU baseline.

Both read token ids and predict the next token. Training runs `forward(idx)` over whole blocks;
serving runs `step(...)`, one call per prompt or per new token, carrying a cache between calls:

- GPT: a key/value cache, one (B, n_head, past, head_dim) tensor for the keys and one for the
  values of each layer (2 x n_layer tensors: a single stacked tensor would cost two extra copies
  of the whole cache per step, measured 1.8x slower at 8 rows x 128 past). Rows may be
  left-padded (continuous batching puts sequences of different lengths side by side); `padding`
  (B,) says how many leading slots of past + input are padding in each row. The causal mask is built explicitly
  and aligned bottom-right: query i of T new tokens sits at absolute index past + i and sees keys
  0..past + i (SDPA's `is_causal` would align it top-left, wrong with a non-empty past).
- GRU: the hidden state (n_layer, B, hidden) is the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256  # the longest context: position embeddings exist for 0..block_size-1
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    bias: bool = False


@dataclass
class GRUConfig:
    vocab_size: int = 65
    n_embd: int = 128
    hidden: int = 512
    n_layer: int = 2
    dropout: float = 0.2


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)  # 3 x (B, T, C)
        return tuple(z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)))

    def step(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x (B, T, C); past_k/v (B, H, P, D); mask (B, 1, T, P + T) bool, True = may attend
        b, t, c = x.shape
        q, k, v = self._heads(x)
        k = torch.cat([past_k, k], dim=2)  # (B, H, P + T, D)
        v = torch.cat([past_v, v], dim=2)
        # Written out rather than SDPA: SDPA's ONNX decomposition scales the whole key cache and
        # transposes it into a new tensor at every step (two more passes over the cache); here only
        # q is scaled and onnxruntime folds the transpose into the matmul (FusedMatMul).
        att = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # (B, H, T, P + T)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = att @ v  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(b, t, c)), k, v


class Block(nn.Module):
    """Pre-norm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def step(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attn.step(self.ln_1(x), past_k, past_v, mask)
        x = x + a
        return x + self.mlp(self.ln_2(x)), k, v


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.layers = cast(list[Block], list(self.blocks))  # a typed view of the same modules
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "mlp.2.weight")):
                # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # idx (B, T) token ids -> (B, T, vocab) logits
        _, t = idx.shape
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def step(
        self, input_ids: torch.Tensor, padding: torch.Tensor, past: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One call for a prompt or a new token.

        input_ids (B, T), padding (B,), past [key_0, value_0, key_1, ...] each (B, H, P, D)
        -> logits (B, vocab) of the token after the last input position (rows are left-padded, so
        the last position is real in every row), present [...] each (B, H, P + T, D).
        """
        _, t = input_ids.shape
        p = past[0].shape[2]
        slots = torch.arange(p + t, device=input_ids.device)  # (P + T,) absolute slot index
        # Row b's real tokens occupy slots padding[b] .. P+T-1 and have positions 0, 1, ...
        positions = (slots[p:].unsqueeze(0) - padding.unsqueeze(1)).clamp(min=0)  # (B, T)
        key_real = slots.unsqueeze(0) >= padding.unsqueeze(1)  # (B, P + T)
        causal = slots.unsqueeze(0) <= slots[p:].unsqueeze(1)  # (T, P + T), aligned bottom-right
        diagonal = slots.unsqueeze(0) == slots[p:].unsqueeze(1)  # padding queries see themselves: no NaN rows
        mask = (causal.unsqueeze(0) & key_real.unsqueeze(1)) | diagonal.unsqueeze(0)  # (B, T, P + T)
        mask = mask.unsqueeze(1)  # (B, 1, T, P + T)
        x = self.wte(input_ids) + self.wpe(positions)  # (B, T, C)
        present: list[torch.Tensor] = []
        for i, block in enumerate(self.layers):
            x, k, v = block.step(x, past[2 * i], past[2 * i + 1], mask)
            present += [k, v]  # (B, H, P + T, D) each
        logits = self.lm_head(self.ln_f(x[:, -1, :]))  # (B, vocab)
        return logits, present


class GRULanguageModel(nn.Module):
    def __init__(self, config: GRUConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.gru = nn.GRU(
            config.n_embd,
            config.hidden,
            num_layers=config.n_layer,
            batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, idx: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        # idx (B, T) -> (B, T, vocab) logits
        out, _ = self.gru(self.drop(self.embed(idx)), state)
        return self.head(self.drop(out))

    def step(self, input_ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids (B, T), state (L, B, hidden) -> logits (B, vocab) after the last input, next state."""
        out, state = self.gru(self.embed(input_ids), state)
        return self.head(out[:, -1, :]), state
