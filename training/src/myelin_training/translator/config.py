"""The translator's training recipes: `cpu` (about an hour on 2 cores), `gpu` (larger), `dry` (seconds)."""

from __future__ import annotations

from dataclasses import dataclass

from myelin_training.translator.model import TranslatorConfig


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    max_tokens: int  # padded tokens per batch (the longer side)
    lr: float  # peak learning rate, reached after `warmup_steps`, then cosine decay to zero
    warmup_steps: int
    vocab_size: int = 8000
    max_sentence_tokens: int = 50  # training pairs with a longer side are dropped
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0
    bf16: bool = True  # autocast matmuls to bfloat16 (CPUs with avx512_bf16 / AMX, and GPUs)
    validation_bleu_pairs: int = 1000  # validation pairs translated (greedy) each epoch
    train_subset: int = 0  # 0: every training pair; N: the first N (dry runs)
    # Export the mean of the last N epochs' weights when it beats the best epoch on validation BLEU
    # (averaging.py); 0 or 1: the best epoch alone.
    average_last: int = 0


@dataclass(frozen=True)
class Recipe:
    model: TranslatorConfig
    train: TrainConfig


RECIPES: dict[str, Recipe] = {
    # 3+3 layers, 256 wide: about an hour on a 2-core AVX-512 CPU with bf16 autocast. Short warm-up,
    # 2,000-token batches (about 620 updates an epoch) and no dropout on attention weights or inside
    # the feed-forward block: in an hour the model is far from overfitting, so updates matter more.
    "cpu": Recipe(
        TranslatorConfig(
            d_model=256,
            n_heads=4,
            n_encoder_layers=3,
            n_decoder_layers=3,
            d_ff=1024,
            dropout=0.1,
            attention_dropout=0.0,
            activation_dropout=0.0,
        ),
        TrainConfig(epochs=8, max_tokens=2000, lr=1e-3, warmup_steps=400),
    ),
    # A few minutes on 2 cores (the demo): half the width, two layers each side, one epoch.
    "quick": Recipe(
        TranslatorConfig(
            d_model=128,
            n_heads=4,
            n_encoder_layers=2,
            n_decoder_layers=2,
            d_ff=512,
            dropout=0.1,
            attention_dropout=0.0,
            activation_dropout=0.0,
        ),
        TrainConfig(epochs=1, max_tokens=3000, lr=2e-3, warmup_steps=200, vocab_size=4000, validation_bleu_pairs=300),
    ),
    # The base Transformer's shape (6+6 layers, 512 wide) for a GPU; not trained on this project's machines.
    "gpu": Recipe(
        TranslatorConfig(d_model=512, n_heads=8, n_encoder_layers=6, n_decoder_layers=6, d_ff=2048, dropout=0.1),
        TrainConfig(epochs=30, max_tokens=12000, lr=7e-4, warmup_steps=2000, vocab_size=16000),
    ),
    # A few seconds: the pipeline end to end (tests, demos of the plumbing).
    "dry": Recipe(
        TranslatorConfig(
            d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0, max_positions=128
        ),
        TrainConfig(
            epochs=1,
            max_tokens=1200,
            lr=3e-3,
            warmup_steps=5,
            vocab_size=400,
            validation_bleu_pairs=64,
            train_subset=600,
        ),
    ),
}
