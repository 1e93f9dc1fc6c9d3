"""The two served graphs, as modules over the trained Translator, and their export specs.

encoder.onnx   source_ids (B, S) int64, source_mask (B, S) bool
               -> encoder_states (B, S, D), cross_keys and cross_values (B, L, H, S, Dh):
               every decoder layer's cross-attention keys and values, computed once per sentence.
decoder.onnx   one decoder step over a self-attention cache:
               input_ids (B, T) int64, position_ids (B, T) int64,
               past_keys and past_values (B, L, H, P, Dh), past_mask (B, P) bool,
               cross_keys and cross_values (B, L, H, S, Dh), source_mask (B, S) bool
               -> log_probs (B, V) for the last new position,
                  present_keys and present_values (B, L, H, P + T, Dh) = past + the new positions.
               P = 0 is the first step (empty cache); T = 1 is the usual step, and T > 1 with P = 0
               re-runs a whole prefix (what the cache saves; see benchmarks/translator_decoder_cache.py).

Parity is checked at batch sizes, source lengths, past lengths (0 included) and step widths other
than the export example's.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from myelin_training.export import GraphExport
from myelin_training.translator.model import Translator

MAX_BATCH = 4096
ENCODER_INPUTS = ["source_ids", "source_mask"]
ENCODER_OUTPUTS = ["encoder_states", "cross_keys", "cross_values"]
DECODER_INPUTS = [
    "input_ids",
    "position_ids",
    "past_keys",
    "past_values",
    "past_mask",
    "cross_keys",
    "cross_values",
    "source_mask",
]
DECODER_OUTPUTS = ["log_probs", "present_keys", "present_values"]


class EncoderGraph(nn.Module):
    def __init__(self, model: Translator) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, source_ids: torch.Tensor, source_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states = self.model.encode(source_ids, source_mask)
        cross_keys, cross_values = self.model.cross_keys_values(states)
        return states, cross_keys, cross_values


class DecoderStepGraph(nn.Module):
    def __init__(self, model: Translator) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
        past_mask: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
        source_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states, new_keys, new_values = self.model.decode(
            input_ids, position_ids, past_keys, past_values, past_mask, cross_keys, cross_values, source_mask
        )
        log_probs = torch.log_softmax(self.model.logits(states[:, -1]), dim=-1)  # (B, V)
        return (
            log_probs,
            torch.cat([past_keys, new_keys], dim=3),  # (B, L, H, P + T, Dh)
            torch.cat([past_values, new_values], dim=3),
        )


def _source(g: torch.Generator, b: int, s: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, vocab, (b, s), generator=g)
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    lengths[0] = s  # at least one full row, so the padded width is real
    mask = torch.arange(s)[None, :] < lengths[:, None]
    return torch.where(mask, ids, 0), mask


def encoder_export(model: Translator) -> GraphExport:
    c = model.config
    g0 = torch.Generator().manual_seed(1234)
    example = _source(g0, 3, 7, c.vocab_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    source = torch.export.Dim("source", min=1, max=c.max_positions)
    trials = itertools.cycle([(1, 1), (5, 13), (2, 40), (9, 3)])  # (batch, source length): none is the example's

    def parity_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        b, s = next(trials)
        return _source(g, b, s, c.vocab_size)

    return GraphExport(
        module=EncoderGraph(model).eval(),
        example_inputs=example,
        input_names=ENCODER_INPUTS,
        output_names=ENCODER_OUTPUTS,
        dynamic_shapes=({0: batch, 1: source}, {0: batch, 1: source}),
        parity_inputs=parity_inputs,
        atol=1e-4,
        rtol=1e-3,
        parity_trials=4,
    )


def decoder_inputs(model: Translator, g: torch.Generator, b: int, t: int, p: int, s: int) -> tuple[torch.Tensor, ...]:
    """Realistic step inputs: cross keys/values from the encoder, a cache with some invalid slots."""
    c = model.config
    source_ids, source_mask = _source(g, b, s, c.vocab_size)
    with torch.no_grad():
        cross_keys, cross_values = model.cross_keys_values(model.encode(source_ids, source_mask))
    shape = (b, c.n_decoder_layers, c.n_heads, p, c.head_dim)
    past_keys, past_values = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    # Rows that joined the batch later have invalid leading slots.
    starts = torch.randint(0, max(p, 1), (b,), generator=g)
    starts[0] = 0
    past_mask = torch.arange(p)[None, :] >= starts[:, None]
    valid = past_mask.sum(1, keepdim=True)
    position_ids = valid + torch.arange(t)[None, :]  # (B, T)
    input_ids = torch.randint(4, c.vocab_size, (b, t), generator=g)
    return input_ids, position_ids, past_keys, past_values, past_mask, cross_keys, cross_values, source_mask


def decoder_export(model: Translator) -> GraphExport:
    c = model.config
    example = decoder_inputs(model, torch.Generator().manual_seed(4321), 3, 2, 4, 6)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    new = torch.export.Dim("new", min=1, max=c.max_positions)
    past = torch.export.Dim("past", min=0, max=c.max_positions)
    source = torch.export.Dim("source", min=1, max=c.max_positions)
    cache = {0: batch, 3: past}
    cross = {0: batch, 3: source}
    # (batch, new, past, source): the first step (P = 0, T = 1), later steps, a whole prefix (P = 0, T > 1).
    trials = itertools.cycle([(1, 1, 0, 5), (6, 1, 9, 11), (2, 1, 1, 1), (4, 7, 0, 9), (5, 3, 6, 30)])

    def parity_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return decoder_inputs(model, g, *next(trials))

    return GraphExport(
        module=DecoderStepGraph(model).eval(),
        example_inputs=example,
        input_names=DECODER_INPUTS,
        output_names=DECODER_OUTPUTS,
        dynamic_shapes=(
            {0: batch, 1: new},
            {0: batch, 1: new},
            cache,
            cache,
            {0: batch, 1: past},
            cross,
            cross,
            {0: batch, 1: source},
        ),
        parity_inputs=parity_inputs,
        atol=1e-4,
        rtol=1e-3,
        parity_trials=5,
    )
