"""myelin-train cnn: train the MNIST CNN and export it as mnist-cnn (the loop: digits.py)."""

from __future__ import annotations

from myelin_training.cnn.config import RECIPES
from myelin_training.cnn.model import CNN
from myelin_training.digits import DigitClassifier, run

MNIST_CNN = DigitClassifier(arch="cnn", name="mnist-cnn", build=CNN, recipes=RECIPES)


def main(argv: list[str] | None = None) -> None:
    run(MNIST_CNN, argv)


if __name__ == "__main__":
    main()
