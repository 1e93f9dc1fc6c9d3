"""Export the trained translator into the model repository: two graphs, the tokenizer, a manifest.

<repository>/translator-<corpus>/<version>/
    encoder.onnx, decoder.onnx   see graphs.py
    tokenizer.json               the subword vocabulary (`tokenizers`), loaded by the service
    model.json                   family, graphs with parity, tokenizer, configs, dataset checksum,
                                 BLEU/chrF, serving limits
    metrics.jsonl, curves.png    the training run
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from myelin_training import export
from myelin_training.data.pairs import Corpus
from myelin_training.translator import tokenizer as tk
from myelin_training.translator.config import TrainConfig
from myelin_training.translator.graphs import decoder_export, encoder_export
from myelin_training.translator.model import Translator

# Longest source the service accepts by default (the model covers max_positions; training saw <= 50).
DEFAULT_MAX_SOURCE_TOKENS = 128


def publish(
    args: argparse.Namespace,
    model: Translator,
    tokenizer: Tokenizer,
    *,
    corpus: Corpus,
    recipe: str,
    config: TrainConfig,
    evaluation: dict[str, Any],
    training: dict[str, Any],
    examples: list[tuple[str, str]],
    side_files: list[Path],
) -> Path:
    c = model.config
    staged = export.staging_dir(args.repository, args.name)
    try:
        entries = {}
        for name, spec in (("encoder", encoder_export(model)), ("decoder", decoder_export(model))):
            path = staged / f"{name}.onnx"
            parity, signature = export.export_graph(spec, path, seed=args.seed)
            entries[name] = export.graph_entry(path, signature, parity)
            print(f"{name}.onnx: parity with PyTorch within {parity.max_abs_diff:.2e} at shapes {parity.shapes}")
        tokenizer.save(str(staged / "tokenizer.json"))
        for path in side_files:
            shutil.copy2(path, staged / path.name)
        manifest: dict[str, Any] = {
            "family": "translator",
            "architecture": "transformer",
            "languages": {"source": "en", "target": "fr"},
            "graphs": entries,
            "tokenizer": {
                "file": "tokenizer.json",
                "library": "tokenizers",
                "model": "BPE",
                "vocab_size": tokenizer.get_vocab_size(),
                "pad_id": tk.PAD_ID,
                "bos_id": tk.BOS_ID,
                "eos_id": tk.EOS_ID,
                "unk_id": tk.UNK_ID,
                "source_suffix": [tk.EOS_ID],  # the encoder sees the source ids followed by EOS
            },
            "decoding": {
                "num_layers": c.n_decoder_layers,
                "num_heads": c.n_heads,
                "head_dim": c.head_dim,
                "max_positions": c.max_positions,
                "default_max_length": "min(max_output_tokens, 2 * source_tokens + 10)",
            },
            "serving": {
                "limits": {
                    "max_source_tokens": min(DEFAULT_MAX_SOURCE_TOKENS, c.max_positions - 1),
                    "max_output_tokens": c.max_positions - 1,
                }
            },
            "training": {
                "recipe": recipe,
                "model_config": dataclasses.asdict(c),
                "train_config": dataclasses.asdict(config),
                "seed": args.seed,
                **training,
            },
            "dataset": corpus.fingerprint(),
            "evaluation": evaluation,
            "examples": [{"source": s, "translation": t} for s, t in examples],
            "export": export.export_info(),
            "files": {"tokenizer": "tokenizer.json", "metrics": "metrics.jsonl", "curves": "curves.png"},
        }
        return export.publish_version(args.repository, args.name, staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
