"""myelin-train cnn: train the MNIST CNN and export it as mnist-cnn."""

from __future__ import annotations

from myelin_training.cnn.model import CNN, CNNConfig
from myelin_training.digits import DigitsRecipe, TrainConfig, run

RECIPE = DigitsRecipe(
    arch="cnn",
    name="mnist-cnn",
    model_config=CNNConfig(),
    build=CNN,
    full=TrainConfig(epochs=12, lr=2e-3, weight_decay=1e-4, augment=True),
    quick=TrainConfig(epochs=1, lr=2e-3, weight_decay=1e-4, augment=False),
)


def main(argv: list[str] | None = None) -> None:
    run(RECIPE, argv)


if __name__ == "__main__":
    main()
