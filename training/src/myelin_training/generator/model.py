"""Language models for the generator family: a decoder-only Transformer (GPT) and a GRU baseline.

Both read token ids and predict the next token. Training runs `forward(idx)` over whole blocks;
serving runs `step(...)`, one call per prompt or per new token, carrying a cache between calls:

- GPT: a key/value cache the graph only READS: per layer, one buffer of keys stored transposed,
  (B, n_head, head_dim, S), and one of values, (B, n_head, S, head_dim), of which the first
  `length` slots are filled (S >= length is the caller's capacity; slots past `length` are
  ignored). Keys are stored transposed so that q @ K is a plain matmul: with (S, head_dim) keys
  onnxruntime's transposed-B batched matmul cost 2.7x the values' matmul at 8 rows x 116 slots.
  The step returns only the keys and values of its T new tokens, (B, n_head, head_dim, T) and
  (B, n_head, T, head_dim) per layer, which the caller writes into its buffers at slots
  length .. length + T - 1. Attention scores are computed against the past and
  the new keys separately and only the small score tensors are concatenated, so no step copies
  the cache (returning concat(past, new) copied the whole cache at every token). Rows may be
  left-padded (continuous batching puts sequences of different lengths side by side); `padding`
  (B,) says how many leading slots of past + input are padding in each row. The causal mask is
  built explicitly and aligned bottom-right: query i of T new tokens sits at absolute slot
  length + i and sees slots 0..length + i (SDPA's `is_causal` would align it top-left).
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
        # True once 1/sqrt(head_dim) is folded into the query weights (the exported step graph:
        # onnxruntime fuses a separate scale into a FusedMatMul ~1.7x slower than a MatMul)
        self.query_scaled = False

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
        # x (B, T, C); past_k (B, H, D, S) (keys transposed) and past_v (B, H, S, D) with S cache
        # slots; mask (B, 1, T, S + T) bool, True = may attend (the first S columns are the cache
        # slots, the last T the new tokens). Returns the new keys (B, H, D, T) and values (B, H, T, D).
        b, t, c = x.shape
        s = past_v.shape[2]
        q, k, v = self._heads(x)  # (B, H, T, D) each
        k = k.transpose(-2, -1)  # (B, H, D, T), as the cache stores keys
        # Written out rather than SDPA: SDPA's ONNX decomposition scales and transposes the whole
        # key cache into new tensors at every step; here only q is scaled, if not already.
        if not self.query_scaled:
            q = q * (1.0 / math.sqrt(self.head_dim))
        att = torch.cat([q @ past_k, q @ k], dim=-1)  # (B, H, T, S + T)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = att[..., :s] @ past_v + att[..., s:] @ v  # (B, H, T, D)
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
        self, input_ids: torch.Tensor, padding: torch.Tensor, length: torch.Tensor, past: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One call for a prompt or a new token.

        input_ids (B, T), padding (B,), length () the filled cache slots, past [key_0, value_0,
        key_1, ...], keys (B, H, D, S) and values (B, H, S, D) with S >= length -> logits (B, vocab)
        of the token after the last input position (rows are left-padded, so the last position is
        real in every row), and new [...]: the keys (B, H, D, T) and values (B, H, T, D) of the T
        inputs, for slots length.. .
        """
        _, t = input_ids.shape
        s = past[1].shape[2]  # values (B, H, S, D)
        cached = torch.arange(s, device=input_ids.device)  # (S,) cache slot index
        fresh = length + torch.arange(t, device=input_ids.device)  # (T,) absolute slots of the inputs
        # Row b's real tokens occupy slots padding[b] .. length+T-1 and have positions 0, 1, ...
        positions = (fresh.unsqueeze(0) - padding.unsqueeze(1)).clamp(min=0)  # (B, T)
        # a cache slot is seen when filled and not padding (every input comes after all of them)
        past_seen = (cached < length).unsqueeze(0) & (cached.unsqueeze(0) >= padding.unsqueeze(1))  # (B, S)
        causal = fresh.unsqueeze(0) <= fresh.unsqueeze(1)  # (T, T): query i sees inputs 0..i
        fresh_real = fresh.unsqueeze(0) >= padding.unsqueeze(1)  # (B, T)
        # padding queries see themselves: no all-masked (NaN) rows
        diagonal = torch.eye(t, dtype=torch.bool, device=input_ids.device)
        fresh_seen = (causal.unsqueeze(0) & fresh_real.unsqueeze(1)) | diagonal.unsqueeze(0)  # (B, T, T)
        mask = torch.cat([past_seen.unsqueeze(1).expand(-1, t, -1), fresh_seen], dim=2)  # (B, T, S + T)
        mask = mask.unsqueeze(1)  # (B, 1, T, S + T)
        x = self.wte(input_ids) + self.wpe(positions)  # (B, T, C)
        new: list[torch.Tensor] = []
        for i, block in enumerate(self.layers):
            x, k, v = block.step(x, past[2 * i], past[2 * i + 1], mask)
            new += [k, v]  # (B, H, D, T), (B, H, T, D)
        logits = self.lm_head(self.ln_f(x[:, -1, :]))  # (B, vocab)
        return logits, new


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
