"""mnist-mlp's training recipes: `full` (the accuracy targets) and `quick` (about 30 s on 2 cores)."""

from __future__ import annotations

from myelin_training.digits import Recipe, TrainConfig
from myelin_training.mlp.model import MLPConfig

RECIPES: dict[str, Recipe] = {
    "full": Recipe(MLPConfig(), TrainConfig(epochs=30, lr=1e-3, weight_decay=1e-4, augment=True)),
    "quick": Recipe(MLPConfig(), TrainConfig(epochs=3, lr=1e-3, weight_decay=1e-4, augment=False)),
}
