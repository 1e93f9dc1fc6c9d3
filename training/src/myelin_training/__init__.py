"""Myelin's training jobs: PyTorch models for every family, ONNX export and evaluation."""
