"""myelin-train mlp: train the MNIST MLP and export it as mnist-mlp (the loop: digits.py)."""

from __future__ import annotations

from myelin_training.digits import DigitClassifier, run
from myelin_training.mlp.config import RECIPES
from myelin_training.mlp.model import MLP

MNIST_MLP = DigitClassifier(arch="mlp", name="mnist-mlp", build=MLP, recipes=RECIPES)


def main(argv: list[str] | None = None) -> None:
    run(MNIST_MLP, argv)


if __name__ == "__main__":
    main()
