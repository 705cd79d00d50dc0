"""Models: DenseNet as pure functions and the import of PyTorch DenseNet weights."""

from iba_jax.models.densenet import (
    ARCHITECTURES,
    DenseNet,
    DenseNetConfig,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
    densenet_tiny,
    head_function,
    predict,
)

__all__ = [
    "ARCHITECTURES",
    "DenseNet",
    "DenseNetConfig",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_tiny",
    "head_function",
    "predict",
]
