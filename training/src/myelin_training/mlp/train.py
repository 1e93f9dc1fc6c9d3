"""myelin-train mlp: train the MNIST MLP and export it as mnist-mlp."""

from __future__ import annotations

from myelin_training.digits import DigitsRecipe, TrainConfig, run
from myelin_training.mlp.model import MLP, MLPConfig

RECIPE = DigitsRecipe(
    arch="mlp",
    name="mnist-mlp",
    model_config=MLPConfig(),
    build=MLP,
    full=TrainConfig(epochs=30, lr=1e-3, weight_decay=1e-4, augment=True),
    quick=TrainConfig(epochs=3, lr=1e-3, weight_decay=1e-4, augment=False),
)


def main(argv: list[str] | None = None) -> None:
    run(RECIPE, argv)


if __name__ == "__main__":
    main()
