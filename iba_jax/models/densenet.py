"""DenseNet (Huang et al., CVPR 2017) as pure functions that can be cut at any named stage.

The network is torchvision's ``DenseNet`` layer for layer, so that weights trained in PyTorch
(torchvision, torchxrayvision, CheXNet) give the same numbers here:

* conv0 7x7/2 with explicit padding 3; norm0; relu0; pool0 = max-pool 3x3/2 with padding 1 filled
  with -inf (not SAME padding, which would shift the grid);
* dense layers BN-ReLU-conv1x1(bn_size*growth)-BN-ReLU-conv3x3(growth, pad 1), each concatenated
  after its input; transitions BN-ReLU-conv1x1(half)-avgpool 2x2/2 (by default computed as
  pool, then convolution: the two linear maps commute, and the convolution costs a quarter);
* norm5 (no ReLU inside the features), then ReLU, global average pool and the classifier;
* BatchNorm epsilon 1e-5, momentum 0.1 in torch's convention (0.9 in flax's).

Images are channels-last, ``(N, H, W, C)`` with C = 1 or 3; every feature map is ``(N, h, w, c)``.

The cut points carry torchvision's module names: ``conv0``, ``norm0``, ``relu0``, ``pool0``,
``denseblock1`` ... ``denseblockK``, ``transition1`` ... ``transition{K-1}`` and ``norm5``.
``encode(variables, x, layer)`` runs the network up to and including ``layer``;
``decode(variables, h, layer)`` runs the rest, up to the logits, so that
``decode(v, encode(v, x, L), L) == apply(v, x)`` for every ``L``. ``encode`` with a tuple of
names returns all of them from a single pass (multi-layer IBA needs denseblock1..3 together).

Why Flax linen (and not NNX): linen's ``init``/``apply`` are already pure functions of an explicit
variables tree ``{"params", "batch_stats"}`` whose paths mirror torch's state-dict names one to
one (``params/denseblock1/denselayer1/conv1/kernel`` is ``features.denseblock1.denselayer1.conv1
.weight``), which makes weight import a table lookup and lets Orbax save the tree as it is. The
model holds no state that changes outside training, so NNX's mutable objects would only add a
split/merge to every jit/vmap boundary. ``DenseNet`` below is a frozen dataclass: hashable, so it
can be a static argument of ``jax.jit``.

References:
  Huang, Liu, van der Maaten, Weinberger. Densely Connected Convolutional Networks. CVPR 2017.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from iba_jax import checks
from iba_jax.models.protocol import StandardLayers
from iba_jax.models.staged import (
    HEADS,
    Head,
    JsonConfig,
    StagedModule,
    StagedNetwork,
    TorchInit,
    Variables,
    batch_norm,
    conv,
    head_function,
)

__all__ = ["HEADS", "DenseNet", "DenseNetConfig", "Head", "Variables", "head_function"]

# The stem's strided stages and their kernel sizes (both have stride 2).
_STRIDED_STEM = {"conv0": 7, "pool0": 3}


@dataclasses.dataclass(frozen=True)
class DenseNetConfig(JsonConfig):
    """Architecture of a DenseNet; the defaults are DenseNet-121 with an ImageNet head.

    Attributes:
      block_config: number of dense layers in each dense block.
      growth_rate: channels each dense layer adds.
      num_init_features: channels of conv0.
      bn_size: bottleneck width of a dense layer, in multiples of ``growth_rate``.
      num_classes: outputs of the classifier.
      in_channels: image channels (1 for grayscale models such as torchxrayvision's, 3 for RGB).
      head: what follows the classifier's Linear layer: ``"linear"`` nothing (torchvision),
        ``"sigmoid"`` a sigmoid (CheXNet, multi-label), ``"relu"`` a ReLU (BrixIA severity
        regression). The model always returns the Linear layer's output (the logits);
        :attr:`DenseNet.link` is the head as a function.
    """

    block_config: tuple[int, ...] = (6, 12, 24, 16)
    growth_rate: int = 32
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000
    in_channels: int = 3
    head: Head = "linear"

    def __post_init__(self) -> None:
        if not isinstance(self.block_config, tuple) or not self.block_config:
            raise ValueError(
                "block_config: expected a non-empty tuple of layer counts; "
                f"got {self.block_config!r}."
            )
        for count in self.block_config:
            checks.check_positive_int("block_config", count)
        for field in ("growth_rate", "num_init_features", "bn_size", "num_classes", "in_channels"):
            checks.check_positive_int(field, getattr(self, field))
        checks.check_choice("head", self.head, HEADS)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The cut points, in the order the network runs them."""
        names = ["conv0", "norm0", "relu0", "pool0"]
        num_blocks = len(self.block_config)
        for i in range(1, num_blocks + 1):
            names.append(f"denseblock{i}")
            if i < num_blocks:
                names.append(f"transition{i}")
        names.append("norm5")
        return tuple(names)

    @property
    def min_image_size(self) -> int:
        """Smallest height/width that leaves every transition's pooling at least one pixel."""
        return 2 ** (len(self.block_config) + 1)

    def channels(self, layer: str) -> int:
        """Number of channels of ``layer``'s output."""
        checks.check_choice("layer", layer, self.layer_names)
        if layer in ("conv0", "norm0", "relu0", "pool0"):
            return self.num_init_features
        c = self.num_init_features
        for i, count in enumerate(self.block_config, 1):
            c += count * self.growth_rate
            if layer == f"denseblock{i}":
                return c
            if i < len(self.block_config):
                c //= 2
                if layer == f"transition{i}":
                    return c
        return c  # norm5

    def receptive_field(self, layer: str) -> int:
        """Side, in input pixels, of the square that one cell of ``layer``'s output sees: the
        theoretical receptive field of every kernel and stride up to the layer (padding aside).

        Each k x k kernel widens it by (k - 1) times the product of the strides before it:
        conv0 7 x 7 / 2, pool0 3 x 3 / 2, a 3 x 3 convolution per dense layer, a 2 x 2 / 2
        pooling per transition. DenseNet-121 at denseblock3: 1031 px.

          >>> densenet121().receptive_field("denseblock3")
          1031
        """
        checks.check_choice("layer", layer, self.layer_names)
        size, jump = 1, 1
        for name in self.layer_names:
            if name in _STRIDED_STEM:
                size, jump = size + (_STRIDED_STEM[name] - 1) * jump, jump * 2
            elif name.startswith("denseblock"):
                size += self.block_config[int(name.removeprefix("denseblock")) - 1] * 2 * jump
            elif name.startswith("transition"):
                size, jump = size + jump, jump * 2
            if name == layer:
                return size
        raise AssertionError(layer)  # check_choice accepted it, so the loop returned


def densenet121(**overrides: Any) -> DenseNetConfig:
    """DenseNet-121: blocks (6, 12, 24, 16), growth 32, 64 initial features."""
    return DenseNetConfig(**overrides)


def densenet169(**overrides: Any) -> DenseNetConfig:
    """DenseNet-169: blocks (6, 12, 32, 32), growth 32, 64 initial features."""
    return DenseNetConfig(**{"block_config": (6, 12, 32, 32), **overrides})


def densenet201(**overrides: Any) -> DenseNetConfig:
    """DenseNet-201: blocks (6, 12, 48, 32), growth 32, 64 initial features."""
    return DenseNetConfig(**{"block_config": (6, 12, 48, 32), **overrides})


def densenet161(**overrides: Any) -> DenseNetConfig:
    """DenseNet-161: blocks (6, 12, 36, 24), growth 48, 96 initial features."""
    defaults = {"block_config": (6, 12, 36, 24), "growth_rate": 48, "num_init_features": 96}
    return DenseNetConfig(**{**defaults, **overrides})


def densenet_tiny(**overrides: Any) -> DenseNetConfig:
    """A tiny DenseNet for unit tests: blocks (2, 2, 2, 2), growth 8, 16 initial features."""
    defaults = {
        "block_config": (2, 2, 2, 2),
        "growth_rate": 8,
        "num_init_features": 16,
        "num_classes": 3,
    }
    return DenseNetConfig(**{**defaults, **overrides})


ARCHITECTURES = {
    "densenet121": densenet121,
    "densenet169": densenet169,
    "densenet201": densenet201,
    "densenet161": densenet161,
    "tiny": densenet_tiny,
}


class _DenseLayer(nn.Module):
    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = batch_norm("norm1")(x, use_running_average=not train)
        y = conv(self.bn_size * self.growth_rate, 1, "conv1")(nn.relu(y))
        y = batch_norm("norm2")(y, use_running_average=not train)
        y = conv(self.growth_rate, 3, "conv2", pad=1)(nn.relu(y))
        return jnp.concatenate([x, y], axis=-1)


class _DenseBlock(nn.Module):
    num_layers: int
    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(1, self.num_layers + 1):
            x = _DenseLayer(self.growth_rate, self.bn_size, name=f"denselayer{i}")(x, train)
        return x


class _Transition(nn.Module):
    out_features: int
    pool_before_conv: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(batch_norm("norm")(x, use_running_average=not train))
        convolve = conv(self.out_features, 1, "conv")
        pool = lambda y: nn.avg_pool(y, (2, 2), strides=(2, 2))
        return convolve(pool(x)) if self.pool_before_conv else pool(convolve(x))


class _DenseNetModule(StagedModule):
    pool_before_conv: bool = True

    def stage(self, name: str, h: jax.Array, train: bool) -> jax.Array:
        c = self.config
        if name == "conv0":
            return conv(c.num_init_features, 7, "conv0", stride=2, pad=3)(h)
        if name in ("norm0", "norm5"):
            return batch_norm(name)(h, use_running_average=not train)
        if name == "relu0":
            return nn.relu(h)
        if name == "pool0":
            return nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        if name.startswith("denseblock"):
            count = c.block_config[int(name.removeprefix("denseblock")) - 1]
            return _DenseBlock(count, c.growth_rate, c.bn_size, name=name)(h, train)
        if name.startswith("transition"):
            return _Transition(h.shape[-1] // 2, self.pool_before_conv, name=name)(h, train)
        # The classifier stage: torchvision's forward() applies ReLU and pooling before it.
        pooled = jnp.mean(nn.relu(h), axis=(1, 2))
        return nn.Dense(c.num_classes, name=self.classifier)(pooled)


# --------------------------------------------------------------------------- pure API


@dataclasses.dataclass(frozen=True)
class DenseNet(StagedNetwork):
    """A DenseNet as pure functions of an explicit variables tree.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0))
      >>> x = jnp.ones((2, 64, 64, 3))
      >>> h = net.encode(variables, x, "denseblock3")
      >>> h.shape
      (2, 4, 4, 32)
      >>> bool(jnp.allclose(net.decode(variables, h, "denseblock3"), net.apply(variables, x)))
      True

    ``pool_before_conv`` (default True) runs each transition as avg-pool, then its 1x1
    convolution; torchvision convolves first. The two linear maps commute, so the outputs are
    equal in exact arithmetic (DenseNet-121 agrees with torchvision within 8.5e-7 relative
    either way) and the
    convolution costs a quarter: IBA after denseblock3 runs 17 % faster. Set it to False for
    torchvision's rounding, bit for bit in order (useful only when comparing ill-conditioned
    runs, such as IBA with a tiny β, where Adam amplifies rounding differences).
    """

    config: DenseNetConfig
    pool_before_conv: bool = True
    torch_init: ClassVar[TorchInit] = TorchInit(conv_fan="in", classifier_bias="zero")
    standard_layers: ClassVar[StandardLayers] = StandardLayers(
        bottleneck="denseblock3",  # the paper's
        multilayer=("denseblock1", "denseblock2", "denseblock3"),
        grad_cam="norm5",
    )

    @property
    def module(self) -> _DenseNetModule:
        return _DenseNetModule(self.config, self.pool_before_conv)
