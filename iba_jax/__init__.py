"""iba-jax: Information Bottleneck Attribution for chest X-ray models, in JAX.

The public API is re-exported here; nothing else needs importing.
"""

from iba_jax.bundle import CorruptBundleError, InputSpec, ModelBundle, load_bundle, save_bundle
from iba_jax.models import (
    DenseNet,
    DenseNetConfig,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
    densenet_tiny,
)
from iba_jax.models.torch_import import (
    StateDictMismatchError,
    load_state_dict,
    variables_from_state_dict,
)

__all__ = [
    "CorruptBundleError",
    "DenseNet",
    "DenseNetConfig",
    "InputSpec",
    "ModelBundle",
    "StateDictMismatchError",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_tiny",
    "load_bundle",
    "load_state_dict",
    "save_bundle",
    "variables_from_state_dict",
]
