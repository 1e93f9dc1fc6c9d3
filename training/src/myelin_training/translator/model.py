"""An encoder-decoder Transformer (Vaswani et al. 2017) written from its parts.

Token embeddings scaled by sqrt(d_model) plus sinusoidal positions; multi-head scaled dot-product
attention; residual add & LayerNorm around every sub-layer; a two-layer ReLU feed-forward block;
masked self-attention in the decoder (position i sees positions <= i) and cross-attention from the
decoder to the encoder's output; a linear layer (tied to the embedding) and softmax over the
vocabulary.

The decoder has one code path. Training calls `decode` on the whole target with an empty key/value
cache; generation calls it one token at a time with the cache of the tokens before. Every layer
returns the keys and values it computed for its new positions, so the caller owns the cache and
can reorder, drop or pad its rows (beam search, requests joining and leaving a batch). Positions
and the validity of each cached slot are inputs, so rows of different lengths share one batch.

Shapes: B batch rows, S source length, T new target positions, P cached positions, L decoder
layers, H heads, Dh = d_model / H. Caches are batch-first, (B, L, H, P, Dh), so one index
selects a row across every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MASKED = -1e9  # added to the scores of positions a query must not see


@dataclass
class TranslatorConfig:
    vocab_size: int = 8000  # one subword vocabulary shared by English and French
    d_model: int = 256
    n_heads: int = 4
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1  # on embeddings and on every sub-layer's output before the residual add
    attention_dropout: float | None = None  # on attention weights (None: `dropout`)
    activation_dropout: float | None = None  # inside the feed-forward block (None: `dropout`)
    max_positions: int = 256  # longest source or target the positional table covers
    norm_first: bool = False  # False: the paper's add & LayerNorm after each sub-layer
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def attention_p(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def activation_p(self) -> float:
        return self.dropout if self.activation_dropout is None else self.activation_dropout


def sinusoids(positions: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...): (positions, d_model)."""
    pos = torch.arange(positions, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    table = torch.zeros(positions, d_model)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


def mask_to_bias(mask: torch.Tensor) -> torch.Tensor:
    """bool mask (True = may attend) -> additive bias (0 or MASKED), float32."""
    return torch.where(mask, 0.0, MASKED).to(torch.float32)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, D) -> (B, H, T, Dh)
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) -> keys and values, each (B, H, T, Dh)."""
        return self._heads(self.key(x)), self._heads(self.value(x))

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Queries from x (B, T, D) over keys/values (B, H, K, Dh); bias (B, 1, T or 1, K) -> (B, T, D)."""
        b, t, d = x.shape
        q = self._heads(self.query(x))  # (B, H, T, Dh)
        scores = q @ keys.transpose(-2, -1) / math.sqrt(self.head_dim) + bias  # (B, H, T, K), float32
        weights = self.dropout(torch.softmax(scores, dim=-1))
        context = (weights @ values).transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.out(context)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(F.relu(self.up(x))))


class Residual(nn.Module):
    """x + Dropout(sublayer(x)) with LayerNorm after the sum (post-norm) or before the sublayer (pre-norm)."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.norm_first else x

    def post(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(update)
        return x if self.norm_first else self.norm(x)


class EncoderLayer(nn.Module):
    def __init__(self, c: TranslatorConfig) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(c.d_model, c.n_heads, c.attention_p)
        self.feed_forward = FeedForward(c.d_model, c.d_ff, c.activation_p)
        self.res_attention = Residual(c.d_model, c.dropout, c.norm_first)
        self.res_feed_forward = Residual(c.d_model, c.dropout, c.norm_first)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.res_attention.pre(x)
        keys, values = self.attention.keys_values(h)
        x = self.res_attention.post(x, self.attention(h, keys, values, bias))
        return self.res_feed_forward.post(x, self.feed_forward(self.res_feed_forward.pre(x)))


class DecoderLayer(nn.Module):
    def __init__(self, c: TranslatorConfig) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(c.d_model, c.n_heads, c.attention_p)
        self.cross_attention = MultiHeadAttention(c.d_model, c.n_heads, c.attention_p)
        self.feed_forward = FeedForward(c.d_model, c.d_ff, c.activation_p)
        self.res_self = Residual(c.d_model, c.dropout, c.norm_first)
        self.res_cross = Residual(c.d_model, c.dropout, c.norm_first)
        self.res_feed_forward = Residual(c.d_model, c.dropout, c.norm_first)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D) the new positions
        self_bias: torch.Tensor,  # (B, 1, T, P + T)
        past_keys: torch.Tensor,  # (B, H, P, Dh)
        past_values: torch.Tensor,
        cross_keys: torch.Tensor,  # (B, H, S, Dh)
        cross_values: torch.Tensor,
        cross_bias: torch.Tensor,  # (B, 1, 1, S)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.res_self.pre(x)
        new_keys, new_values = self.self_attention.keys_values(h)  # (B, H, T, Dh)
        keys = torch.cat([past_keys, new_keys], dim=2)  # (B, H, P + T, Dh)
        values = torch.cat([past_values, new_values], dim=2)
        x = self.res_self.post(x, self.self_attention(h, keys, values, self_bias))
        x = self.res_cross.post(x, self.cross_attention(self.res_cross.pre(x), cross_keys, cross_values, cross_bias))
        x = self.res_feed_forward.post(x, self.feed_forward(self.res_feed_forward.pre(x)))
        return x, new_keys, new_values


class Translator(nn.Module):
    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        nn.init.normal_(self.embedding.weight, std=c.d_model**-0.5)  # unit variance after the sqrt(d) scale
        with torch.no_grad():
            self.embedding.weight[c.pad_id].zero_()
        self.register_buffer("positions", sinusoids(c.max_positions, c.d_model), persistent=False)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_encoder_layers))
        self.decoder: list[DecoderLayer] = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_decoder_layers))  # type: ignore[assignment]
        self.positions: torch.Tensor
        # Pre-norm stacks end with a LayerNorm; post-norm layers already end with one.
        self.encoder_norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and positions -> (B, T, D)."""
        x = self.embedding(ids) * math.sqrt(self.config.d_model) + self.positions[positions]
        return self.dropout(x)

    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) ids and bool mask (True = real token) -> encoder states (B, S, D)."""
        positions = torch.arange(source_ids.shape[1], device=source_ids.device).expand_as(source_ids)
        x = self.embed(source_ids, positions)
        bias = mask_to_bias(source_mask)[:, None, None, :]  # (B, 1, 1, S)
        for layer in self.encoder:
            x = layer(x, bias)
        return self.encoder_norm(x)

    def cross_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, S, D) -> every decoder layer's cross-attention keys and values, (B, L, H, S, Dh)."""
        pairs = [layer.cross_attention.keys_values(memory) for layer in self.decoder]
        return torch.stack([k for k, _ in pairs], 1), torch.stack([v for _, v in pairs], 1)

    def decode(
        self,
        ids: torch.Tensor,  # (B, T) new target tokens
        positions: torch.Tensor,  # (B, T) their positions in each row's sequence
        past_keys: torch.Tensor,  # (B, L, H, P, Dh) cache of earlier positions
        past_values: torch.Tensor,
        past_mask: torch.Tensor,  # (B, P) bool: which cached slots hold a real position
        cross_keys: torch.Tensor,  # (B, L, H, S, Dh)
        cross_values: torch.Tensor,
        source_mask: torch.Tensor,  # (B, S) bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> decoder states (B, T, D) and the new positions' keys and values, (B, L, H, T, Dh)."""
        b, t = ids.shape
        # Query i (slot P + i) sees every valid cached slot and new slots 0..i: the causal mask is
        # aligned bottom-right over the P + T keys, explicitly (SDPA's is_causal would align it top-left).
        causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
        self_mask = torch.cat([past_mask[:, None, :].expand(b, t, -1), causal.expand(b, t, t)], dim=-1)
        self_bias = mask_to_bias(self_mask)[:, None]  # (B, 1, T, P + T)
        cross_bias = mask_to_bias(source_mask)[:, None, None, :]  # (B, 1, 1, S)
        x = self.embed(ids, positions)
        new_keys, new_values = [], []
        for i, layer in enumerate(self.decoder):
            x, k, v = layer(
                x, self_bias, past_keys[:, i], past_values[:, i], cross_keys[:, i], cross_values[:, i], cross_bias
            )
            new_keys.append(k)
            new_values.append(v)
        return self.decoder_norm(x), torch.stack(new_keys, 1), torch.stack(new_values, 1)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V): the output projection is the embedding matrix (tied)."""
        return states @ self.embedding.weight.T

    def empty_cache(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        shape = (batch, c.n_decoder_layers, c.n_heads, 0, c.head_dim)
        empty = torch.zeros(shape, device=device, dtype=self.embedding.weight.dtype)
        return empty, empty, torch.zeros(batch, 0, dtype=torch.bool, device=device)

    def forward(self, source_ids: torch.Tensor, source_mask: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, S) source, (B, T) target prefix (BOS first) -> (B, T, V) logits."""
        memory = self.encode(source_ids, source_mask)
        cross_keys, cross_values = self.cross_keys_values(memory)
        past_keys, past_values, past_mask = self.empty_cache(target_in.shape[0], target_in.device)
        positions = torch.arange(target_in.shape[1], device=target_in.device).expand_as(target_in)
        states, _, _ = self.decode(
            target_in, positions, past_keys, past_values, past_mask, cross_keys, cross_values, source_mask
        )
        return self.logits(states)
