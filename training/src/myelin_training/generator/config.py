"""The generator's training recipes per architecture: `cpu`, `gpu`, `quick` (the demo) and `dry-run`.

Plain data, as nanoGPT's config files: train.py picks one by --arch and --config (a dry run always
takes `dry-run`), then applies the command line's overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from myelin_training.generator.model import GPTConfig, GRUConfig


@dataclass(frozen=True)
class TrainConfig:
    max_iters: int
    batch_size: int
    block_size: int
    lr: float
    min_lr: float
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 40
    time_budget_s: float = 0.0  # 0: schedule by iterations only
    bf16: bool = True  # autocast matmuls to bfloat16 (AVX-512 BF16 on CPU, tensor cores on GPU)
    compile: bool = False


@dataclass(frozen=True)
class Recipe:
    model: GPTConfig | GRUConfig
    train: TrainConfig


# Both architectures' short runs: `make demo`'s two minutes, and the dry run's seconds (tests).
QUICK = TrainConfig(
    max_iters=5000,
    batch_size=8,
    block_size=256,
    lr=3e-3,
    min_lr=3e-4,
    warmup_iters=30,
    eval_interval=100,
    eval_batches=10,
    time_budget_s=120,
)
# The dry run: QUICK's rates, a few seconds of small float32 batches.
DRY_RUN = replace(QUICK, max_iters=20, warmup_iters=5, eval_interval=10, eval_batches=2, time_budget_s=0.0)
DRY_RUN = replace(DRY_RUN, batch_size=4, block_size=32, bf16=False)

# The recipes per architecture. block_size lives in both configs (the GPT's position table must
# cover the training windows).
RECIPES: dict[str, dict[str, Recipe]] = {
    "gpt": {
        # ~30 minutes on 2 CPU cores: 4 layers, d_model 256, 3.2M parameters. No dropout (nanoGPT's
        # CPU recipe also drops it): with dropout a CPU step ran 2.3 it/s against 6.3 (attention
        # leaves SDPA's fused kernel). A fast machine fits more iterations than the loss needs
        # (validation turned up after 4,250 of 8,868 on a 2026-12-03 run), hence the best
        # evaluation's weights are exported.
        "cpu": Recipe(
            GPTConfig(block_size=256, n_layer=4, n_head=4, n_embd=256, dropout=0.0),
            TrainConfig(
                max_iters=20_000, batch_size=12, block_size=256, lr=1.5e-3, min_lr=1.5e-4, time_budget_s=28 * 60
            ),
        ),
        # nanoGPT's shakespeare-char GPU model: 6 layers, d_model 384, 10.7M parameters.
        "gpu": Recipe(
            GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
            TrainConfig(
                max_iters=5000, batch_size=64, block_size=256, lr=1e-3, min_lr=1e-4, warmup_iters=100, compile=True
            ),
        ),
        # `make demo`: two minutes of training, enough for recognisable words and speakers.
        "quick": Recipe(
            GPTConfig(block_size=256, n_layer=2, n_head=4, n_embd=128, dropout=0.0),
            QUICK,
        ),
        "dry-run": Recipe(
            GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=32, dropout=0.0),
            DRY_RUN,
        ),
    },
    "gru": {
        "cpu": Recipe(
            GRUConfig(n_embd=128, hidden=512, n_layer=2, dropout=0.1),
            TrainConfig(
                max_iters=20_000,
                batch_size=32,
                block_size=128,
                lr=2e-3,
                min_lr=2e-4,
                weight_decay=0.0,
                time_budget_s=8 * 60,
            ),
        ),
        "gpu": Recipe(
            GRUConfig(n_embd=256, hidden=1024, n_layer=3, dropout=0.25),
            TrainConfig(max_iters=8000, batch_size=64, block_size=256, lr=2e-3, min_lr=2e-4, weight_decay=0.0),
        ),
        "quick": Recipe(
            GRUConfig(n_embd=64, hidden=256, n_layer=1, dropout=0.0),
            replace(QUICK, batch_size=16, block_size=128, weight_decay=0.0),
        ),
        "dry-run": Recipe(
            GRUConfig(n_embd=16, hidden=32, n_layer=1, dropout=0.0),
            replace(DRY_RUN, weight_decay=0.0),
        ),
    },
}
