"""Myelin's model services: gRPC on onnxruntime, one process per model family."""

__version__ = "0.1.0"
