"""stn-deploy: Spatial Transformer Networks from PyTorch training to TensorRT engines."""

__version__ = "0.1.0"
