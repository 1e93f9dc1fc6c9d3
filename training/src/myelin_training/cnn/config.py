"""mnist-cnn's training recipes: `full` (the accuracy targets) and `quick` (about 75 s on 2 cores)."""

from __future__ import annotations

from myelin_training.cnn.model import CNNConfig
from myelin_training.digits import Recipe, TrainConfig

RECIPES: dict[str, Recipe] = {
    "full": Recipe(CNNConfig(), TrainConfig(epochs=12, lr=2e-3, weight_decay=1e-4, augment=True)),
    "quick": Recipe(CNNConfig(), TrainConfig(epochs=1, lr=2e-3, weight_decay=1e-4, augment=False)),
}
