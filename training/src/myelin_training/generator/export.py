"""Export a trained language model as ONE step graph with a cache, and publish it.

The graph serves both the prompt (an empty cache) and each new token (the cache so far):

GPT  step(input_ids (B, T) int64, padding (B,) int64, length () int64,
          past.{i}.key: (B, H, D, S) float32 (keys transposed), past.{i}.value: (B, H, S, D))
       -> logits (B, vocab) float32, new.{i}.key: (B, H, D, T), new.{i}.value: (B, H, T, D)
GRU  step(input_ids (B, T) int64, state (L, B, hidden) float32)
       -> logits (B, vocab) float32, next_state (L, B, hidden) float32

The GPT graph only reads its cache: `past.*` are the caller's buffers of S slots, of which the
first `length` are filled (the rest are ignored, so a caller can keep spare capacity and grow it
rarely), and `new.*` are the keys and values of the T inputs, which the caller writes at slots
length .. length + T - 1. No step copies the cache. `padding[b]` is the number of leading slots
of row b (in past + input) that are padding: the service left-pads sequences of different lengths
to decode them together. Parity against PyTorch is checked at batch sizes, input lengths, cache
sizes, filled lengths (including an empty cache) and paddings other than the example's, with
random values in the unfilled slots.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from myelin_training import export
from myelin_training.generator.model import GPT, GRULanguageModel
from myelin_training.generator.quantize import quantize_version

MAX_BATCH = 256


class GPTStep(nn.Module):
    def __init__(self, model: GPT) -> None:
        super().__init__()
        # A copy with 1/sqrt(head_dim) folded into the query rows of each qkv projection: the
        # graph then computes q @ K as a plain MatMul (see CausalSelfAttention.query_scaled).
        self.model = copy.deepcopy(model)
        with torch.no_grad():
            for block in self.model.layers:
                attn, c = block.attn, model.config.n_embd
                attn.qkv.weight[:c] *= 1.0 / math.sqrt(attn.head_dim)
                if attn.qkv.bias is not None:
                    attn.qkv.bias[:c] *= 1.0 / math.sqrt(attn.head_dim)
                attn.query_scaled = True

    def forward(
        self, input_ids: torch.Tensor, padding: torch.Tensor, length: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        logits, new = self.model.step(input_ids, padding, length, list(past))
        return (logits, *new)


def cache_names(layers: int, prefix: str) -> list[str]:
    """past.0.key, past.0.value, past.1.key, ... (or new.*): the graph's cache inputs/outputs."""
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


class GRUStep(nn.Module):
    def __init__(self, model: GRULanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.step(input_ids, state)


def gpt_graph(model: GPT) -> export.GraphExport:
    c = model.config
    head_dim = c.n_embd // c.n_head

    def inputs(
        b: int, t: int, s: int, length: int, padding: list[int], g: torch.Generator | None
    ) -> tuple[torch.Tensor, ...]:
        ids = torch.randint(0, c.vocab_size, (b, t), generator=g)
        # random values in the unfilled slots too: the graph must ignore them
        past = [
            torch.randn(b, c.n_head, *((head_dim, s) if i % 2 == 0 else (s, head_dim)), generator=g)
            for i in range(2 * c.n_layer)
        ]
        return (ids, torch.tensor(padding, dtype=torch.int64), torch.tensor(length, dtype=torch.int64), *past)

    # (batch, new tokens, cache slots, filled slots, left padding per row); positions < block_size
    trials = [
        (1, 5, 0, 0, [0]),  # a prompt, empty cache
        (3, 1, 12, 9, [0, 4, 9]),  # one decoding step of three rows of different lengths, spare slots
        (2, 4, 6, 6, [2, 7]),  # a padded prompt batch on top of a full cache
        (5, 1, 3, 1, [0, 0, 1, 0, 1]),
        (1, 1, min(c.block_size - 1, 64), min(c.block_size - 2, 40), [0]),
        (2, 3, 8, 0, [1, 0]),  # a padded prompt batch into empty spare slots
    ]
    queue = list(trials)

    def parity_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return inputs(*queue.pop(0), g)

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("sequence", min=1, max=c.block_size)
    slots = torch.export.Dim("slots", min=0, max=c.block_size)
    # *past is one (variadic) argument to torch.export: its shapes come as one tuple
    # keys (B, H, D, S), values (B, H, S, D)
    caches = tuple({0: batch, 3 if i % 2 == 0 else 2: slots} for i in range(2 * c.n_layer))
    dynamic: Any = ({0: batch, 1: seq}, {0: batch}, None, caches)
    return export.GraphExport(
        module=GPTStep(model).eval(),
        example_inputs=inputs(2, 3, 5, 4, [0, 2], None),
        input_names=["input_ids", "padding", "length", *cache_names(c.n_layer, "past")],
        output_names=["logits", *cache_names(c.n_layer, "new")],
        dynamic_shapes=dynamic,
        parity_inputs=parity_inputs,
        atol=1e-4,
        rtol=1e-3,
        parity_trials=len(trials),
    )


def gru_graph(model: GRULanguageModel) -> export.GraphExport:
    c = model.config
    trials = [(1, 7), (3, 1), (4, 3), (1, 1)]
    queue = list(trials)

    def inputs(b: int, t: int, g: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        return torch.randint(0, c.vocab_size, (b, t), generator=g), torch.randn(c.n_layer, b, c.hidden, generator=g)

    def parity_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return inputs(*queue.pop(0), g)

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("sequence", min=1, max=1 << 16)
    return export.GraphExport(
        module=GRUStep(model).eval(),
        example_inputs=inputs(2, 3, None),
        input_names=["input_ids", "state"],
        output_names=["logits", "next_state"],
        dynamic_shapes=({0: batch, 1: seq}, {1: batch}),
        parity_inputs=parity_inputs,
        atol=1e-4,
        rtol=1e-3,
        parity_trials=len(trials),
    )


def decoder_entry(model: nn.Module) -> dict[str, Any]:
    """What the service needs to drive the step graph."""
    if isinstance(model, GPT):
        c = model.config
        return {
            "cache": "kv",
            # the graph reads past.* (S slots, `length` filled) and returns only new.*: the caller
            # owns the buffers and writes the new keys/values into them
            "cache_update": "caller",
            # the slot axis of each kind of cache tensor: keys are stored transposed (B, H, D, S)
            "slot_axis": {"key": 3, "value": 2},
            "context": c.block_size,
            "cache_shape": {"layers": c.n_layer, "heads": c.n_head, "head_dim": c.n_embd // c.n_head},
            "cache_inputs": cache_names(c.n_layer, "past"),
            "cache_outputs": cache_names(c.n_layer, "new"),
        }
    assert isinstance(model, GRULanguageModel)
    g = model.config
    return {"cache": "state", "context": None, "state_shape": {"layers": g.n_layer, "hidden": g.hidden}}


def export_model(
    model: nn.Module,
    *,
    arch: str,
    repository: Path,
    name: str,
    tokenizer: Tokenizer,
    tokenizer_kind: str,
    manifest_extra: dict[str, Any],
    side_files: list[Path],
    seed: int,
    int8_validation_ids: np.ndarray | None = None,
) -> Path:
    """Export, check and publish a version. With `int8_validation_ids` (a GPT only), the published
    step graph has int8 weights and the manifest records the loss on those ids before and after."""
    if int8_validation_ids is not None and not isinstance(model, GPT):
        raise ValueError("int8 quantization is for the GPT's step graph; the GRU's recurrence is not quantized")
    model = model.cpu().float().eval()
    spec = gpt_graph(model) if isinstance(model, GPT) else gru_graph(model)  # type: ignore[arg-type]
    staged = export.staging_dir(repository, name)
    try:
        path = staged / "step.onnx"
        with warnings.catch_warnings():
            # nn.GRU re-assigns its flat weights while torch.export traces it; harmless here.
            warnings.filterwarnings("ignore", message="The tensor attributes .* were assigned during export")
            # torch's own GRU lowering (while_loop) calls a deprecated helper; not ours to fix.
            warnings.filterwarnings("ignore", message="_check_is_size will be removed", category=FutureWarning)
            parity, signature = export.export_graph(spec, path, seed=seed)
        decoder = decoder_entry(model)
        if int8_validation_ids is not None:
            manifest_extra = {**manifest_extra, "quantization": quantize_version(path, decoder, int8_validation_ids)}
        tokenizer.save(str(staged / "tokenizer.json"))
        for side in side_files:
            shutil.copy2(side, staged / side.name)
        unk = tokenizer.token_to_id("<unk>") if tokenizer_kind == "char" else None
        manifest: dict[str, Any] = {
            "family": "generator",
            "architecture": arch,
            "graphs": {"step": export.graph_entry(path, signature, parity)},
            "decoder": decoder,
            "tokenizer": {
                "file": "tokenizer.json",
                "kind": tokenizer_kind,
                "vocab_size": tokenizer.get_vocab_size(),
                "unk_id": unk,
                # an empty prompt starts from this text (nanoGPT samples from a newline)
                "start_text": "\n",
            },
            "model_config": dataclasses.asdict(model.config),  # type: ignore[call-overload]
            "export": export.export_info(),
            **manifest_extra,
        }
        return export.publish_version(repository, name, staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
