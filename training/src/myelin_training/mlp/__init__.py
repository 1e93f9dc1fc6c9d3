"""A multi-layer perceptron for MNIST digits (mnist-mlp)."""
