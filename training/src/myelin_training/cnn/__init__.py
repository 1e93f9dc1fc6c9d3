"""A convolutional network for MNIST digits (mnist-cnn)."""
