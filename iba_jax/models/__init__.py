"""Models: the Model protocol, DenseNet as pure functions, and the import of PyTorch weights."""

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
)
from iba_jax.models.protocol import FunctionModel, Model, check_model, predict

__all__ = [
    "ARCHITECTURES",
    "DenseNet",
    "DenseNetConfig",
    "FunctionModel",
    "Model",
    "check_model",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_tiny",
    "head_function",
    "predict",
]
