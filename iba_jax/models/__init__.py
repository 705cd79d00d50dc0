"""Models: the Model protocol, DenseNet and ResNet as pure functions, and the import of
PyTorch weights."""

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
from iba_jax.models.protocol import (
    FunctionModel,
    Model,
    StandardLayers,
    check_model,
    predict,
    standard_layers,
)
from iba_jax.models.resnet import (
    ResNet,
    ResNetConfig,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_tiny,
)

__all__ = [
    "ARCHITECTURES",
    "DenseNet",
    "DenseNetConfig",
    "FunctionModel",
    "Model",
    "ResNet",
    "ResNetConfig",
    "StandardLayers",
    "check_model",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_tiny",
    "head_function",
    "predict",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_tiny",
    "standard_layers",
]
