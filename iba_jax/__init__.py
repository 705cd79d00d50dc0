"""iba-jax: Information Bottleneck Attribution for chest X-ray models, in JAX.

The API for explaining models is re-exported here. The pieces that new methods are built from
(as ``iba_jax.coiba`` is) are public in their modules: ``loop`` (the compiled optimisation and its
step), ``bottleneck`` (forms, capacity, noise), ``objectives`` (model losses, target
transforms), ``inputs`` (checks of images, targets, statistics and keys).
"""

from iba_jax.attribute import (
    AttributionAux,
    IBAConfig,
    MultiLayerResult,
    attribute,
    iba,
    inverse_iba,
    multilayer_iba,
    regression_iba,
)
from iba_jax.bottleneck import iba_bottleneck, inverse_bottleneck, mean_capacity
from iba_jax.bundle import (
    CorruptBundleError,
    InputSpec,
    ModelBundle,
    StatsOfAnotherModelError,
    load_bundle,
    load_feature_stats,
    save_bundle,
    save_feature_stats,
    stats_layers,
)
from iba_jax.calibration import BetaPoint, beta_markdown, beta_sweep, recommended_beta
from iba_jax.coiba import coiba
from iba_jax.diagnostics import FlatLambdaWarning, lambda_range
from iba_jax.locality import LayerLocality, LocalityReport, layer_locality
from iba_jax.loop import LoopPieces, Trajectory, optimise_alpha, read_out
from iba_jax.maps import binarize, resize_bilinear_mirror, to_bits_map
from iba_jax.memory import MemoryEstimate, iba_memory
from iba_jax.methods import METHODS, MethodSettings, attribution_maps
from iba_jax.models import (
    DenseNet,
    DenseNetConfig,
    FunctionModel,
    Model,
    ResNet,
    ResNetConfig,
    StandardLayers,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
    densenet_tiny,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_tiny,
    standard_layers,
)
from iba_jax.models.torch_import import (
    StateDictMismatchError,
    load_state_dict,
    variables_from_state_dict,
)
from iba_jax.objectives import (
    CleanPrediction,
    Negated,
    RegressionMaximisation,
    SquaredError,
    class_index_loss,
    softmax_cross_entropy,
    target_bce,
    vector_bce,
)
from iba_jax.pretrained import load_pretrained, pretrained_dir
from iba_jax.segmentation import Segmenter, load_segmenter, segment_lungs
from iba_jax.sharding import local_mesh
from iba_jax.stats import FeatureStats, estimate_feature_stats

__all__ = [
    "METHODS",
    "AttributionAux",
    "BetaPoint",
    "CleanPrediction",
    "CorruptBundleError",
    "DenseNet",
    "DenseNetConfig",
    "FeatureStats",
    "FlatLambdaWarning",
    "FunctionModel",
    "IBAConfig",
    "InputSpec",
    "LayerLocality",
    "LocalityReport",
    "LoopPieces",
    "MemoryEstimate",
    "MethodSettings",
    "Model",
    "ModelBundle",
    "MultiLayerResult",
    "Negated",
    "RegressionMaximisation",
    "ResNet",
    "ResNetConfig",
    "Segmenter",
    "SquaredError",
    "StandardLayers",
    "StateDictMismatchError",
    "StatsOfAnotherModelError",
    "Trajectory",
    "attribute",
    "attribution_maps",
    "beta_markdown",
    "beta_sweep",
    "binarize",
    "class_index_loss",
    "coiba",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_tiny",
    "estimate_feature_stats",
    "iba",
    "iba_bottleneck",
    "iba_memory",
    "inverse_bottleneck",
    "inverse_iba",
    "lambda_range",
    "layer_locality",
    "load_bundle",
    "load_feature_stats",
    "load_pretrained",
    "load_segmenter",
    "load_state_dict",
    "local_mesh",
    "mean_capacity",
    "multilayer_iba",
    "optimise_alpha",
    "pretrained_dir",
    "read_out",
    "recommended_beta",
    "regression_iba",
    "resize_bilinear_mirror",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_tiny",
    "save_bundle",
    "save_feature_stats",
    "segment_lungs",
    "softmax_cross_entropy",
    "standard_layers",
    "stats_layers",
    "target_bce",
    "to_bits_map",
    "variables_from_state_dict",
    "vector_bce",
]
