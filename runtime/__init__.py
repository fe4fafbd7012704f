"""Torch-free runtime: numpy, ONNX Runtime and tokenizers only."""
