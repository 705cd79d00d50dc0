"""ResNet (He et al., CVPR 2016) as pure functions that can be cut at any named stage.

torchvision's ``ResNet`` layer for layer (v1.5: a bottleneck block strides in its 3x3
convolution), so that torchvision's and torchxrayvision's weights give the same numbers here:

* conv1 7x7/2 with explicit padding 3; bn1; relu; maxpool 3x3/2 with padding 1 (filled with
  -inf);
* stages layer1 ... layer4 of basic blocks (conv3x3-BN-ReLU-conv3x3-BN) or bottleneck blocks
  (conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(4x)-BN), each added to its input (through
  ``downsample``, a strided 1x1 convolution and BN, where the shape changes) and ReLU'd; the
  first block of layer2 ... layer4 strides by 2;
* global average pool and ``fc``.

The cut points are torchvision's module names: ``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` ... ``layer4``; the variables' paths mirror the state-dict keys
(``params/layer1/0/conv1/kernel`` is ``layer1.0.conv1.weight``, ``layer1.0.downsample.0`` is
``params/layer1/0/downsample/0``).

References:
  He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax

from iba_jax import checks
from iba_jax.models.protocol import StandardLayers
from iba_jax.models.staged import (
    HEADS,
    Head,
    JsonConfig,
    StagedModule,
    StagedNetwork,
    TorchInit,
    batch_norm,
    conv,
)

Block = Literal["basic", "bottleneck"]
_EXPANSION = {"basic": 1, "bottleneck": 4}
_STEM = ("conv1", "bn1", "relu", "maxpool")
_STRIDED_STEM = {"conv1": 7, "maxpool": 3}  # kernel sizes; both stride 2


@dataclasses.dataclass(frozen=True)
class ResNetConfig(JsonConfig):
    """Architecture of a ResNet; the defaults are ResNet-50 with an ImageNet head.

    Attributes:
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101/152).
      layers: blocks in each stage (4 stages in torchvision's).
      width: channels of conv1 and of layer1's blocks; each later stage doubles it.
      num_classes: outputs of ``fc``.
      in_channels: image channels (1 for torchxrayvision's, 3 for RGB).
      head: what follows ``fc`` (see ``DenseNetConfig.head``); the model returns the logits.
    """

    block: Block = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    num_classes: int = 1000
    in_channels: int = 3
    head: Head = "linear"

    def __post_init__(self) -> None:
        checks.check_choice("block", self.block, tuple(_EXPANSION))
        if not isinstance(self.layers, tuple) or not self.layers:
            raise ValueError(
                f"layers: expected a non-empty tuple of block counts; got {self.layers!r}."
            )
        for count in self.layers:
            checks.check_positive_int("layers", count)
        for field in ("width", "num_classes", "in_channels"):
            checks.check_positive_int(field, getattr(self, field))
        checks.check_choice("head", self.head, HEADS)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The cut points, in the order the network runs them."""
        return (*_STEM, *(f"layer{i}" for i in range(1, len(self.layers) + 1)))

    @property
    def min_image_size(self) -> int:
        """Smallest height/width that leaves the last stage at least one pixel."""
        return 2 ** (len(self.layers) + 1)

    def planes(self, stage: int) -> int:
        """The inner width of stage ``stage`` (1-based) before the block's expansion."""
        return self.width * 2 ** (stage - 1)

    def channels(self, layer: str) -> int:
        """Number of channels of ``layer``'s output."""
        checks.check_choice("layer", layer, self.layer_names)
        if layer in _STEM:
            return self.width
        return self.planes(int(layer.removeprefix("layer"))) * _EXPANSION[self.block]

    def receptive_field(self, layer: str) -> int:
        """Side, in input pixels, of the square one cell of ``layer``'s output sees (the
        theoretical receptive field of every kernel and stride up to it).

          >>> resnet50().receptive_field("layer3"), resnet50().receptive_field("layer4")
          (267, 427)
        """
        checks.check_choice("layer", layer, self.layer_names)
        size, jump = 1, 1
        for name in self.layer_names:
            if name in _STRIDED_STEM:
                size, jump = size + (_STRIDED_STEM[name] - 1) * jump, jump * 2
            elif name.startswith("layer"):
                stage = int(name.removeprefix("layer"))
                for i in range(self.layers[stage - 1]):
                    stride = 2 if stage > 1 and i == 0 else 1
                    # the 3x3 convolutions of the block's main path (the first one strides)
                    threes = 2 if self.block == "basic" else 1
                    size, jump = size + 2 * jump, jump * stride
                    size += (threes - 1) * 2 * jump
            if name == layer:
                return size
        raise AssertionError(layer)  # check_choice accepted it, so the loop returned


def resnet18(**overrides: Any) -> ResNetConfig:
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    return ResNetConfig(**{"block": "basic", "layers": (2, 2, 2, 2), **overrides})


def resnet34(**overrides: Any) -> ResNetConfig:
    """ResNet-34: basic blocks (3, 4, 6, 3)."""
    return ResNetConfig(**{"block": "basic", "layers": (3, 4, 6, 3), **overrides})


def resnet50(**overrides: Any) -> ResNetConfig:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return ResNetConfig(**{"block": "bottleneck", "layers": (3, 4, 6, 3), **overrides})


def resnet101(**overrides: Any) -> ResNetConfig:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3)."""
    return ResNetConfig(**{"block": "bottleneck", "layers": (3, 4, 23, 3), **overrides})


def resnet152(**overrides: Any) -> ResNetConfig:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3)."""
    return ResNetConfig(**{"block": "bottleneck", "layers": (3, 8, 36, 3), **overrides})


def resnet_tiny(**overrides: Any) -> ResNetConfig:
    """A small ResNet for tests: one basic block per stage, width 8, 3 classes."""
    defaults = {"block": "basic", "layers": (1, 1, 1, 1), "width": 8, "num_classes": 3}
    return ResNetConfig(**{**defaults, **overrides})


RESNET_ARCHITECTURES = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "resnet_tiny": resnet_tiny,
}


class _Downsample(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(self.features, 1, "0", stride=self.stride)(x)
        return batch_norm("1")(x, use_running_average=not train)


class _Block(nn.Module):
    block: Block
    planes: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_channels = self.planes * _EXPANSION[self.block]
        kernels: tuple[tuple[int, int, int], ...]  # (kernel, stride, features) of each conv
        if self.block == "basic":
            kernels = ((3, self.stride, self.planes), (3, 1, out_channels))
        else:
            kernels = ((1, 1, self.planes), (3, self.stride, self.planes), (1, 1, out_channels))
        y = x
        for i, (kernel, stride, features) in enumerate(kernels, 1):
            y = conv(features, kernel, f"conv{i}", stride=stride, pad=kernel // 2)(y)
            y = batch_norm(f"bn{i}")(y, use_running_average=not train)
            if i < len(kernels):
                y = nn.relu(y)
        if self.stride != 1 or x.shape[-1] != out_channels:
            x = _Downsample(out_channels, self.stride, name="downsample")(x, train)
        return nn.relu(y + x)


class _Stage(nn.Module):
    block: Block
    planes: int
    stride: int
    count: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.count):
            x = _Block(self.block, self.planes, self.stride if i == 0 else 1, name=str(i))(x, train)
        return x


class _ResNetModule(StagedModule):
    classifier: ClassVar[str] = "fc"

    def stage(self, name: str, h: jax.Array, train: bool) -> jax.Array:
        c = self.config
        if name == "conv1":
            return conv(c.width, 7, "conv1", stride=2, pad=3)(h)
        if name == "bn1":
            return batch_norm("bn1")(h, use_running_average=not train)
        if name == "relu":
            return nn.relu(h)
        if name == "maxpool":
            return nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        if name.startswith("layer"):
            stage = int(name.removeprefix("layer"))
            stride = 1 if stage == 1 else 2
            return _Stage(c.block, c.planes(stage), stride, c.layers[stage - 1], name=name)(
                h, train
            )
        pooled = h.mean(axis=(1, 2))
        return nn.Dense(c.num_classes, name="fc")(pooled)


@dataclasses.dataclass(frozen=True)
class ResNet(StagedNetwork):
    """A ResNet as pure functions of an explicit variables tree (see ``models.staged``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from iba_jax.models import ResNet, resnet_tiny
      >>> net = ResNet(resnet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> x = jnp.ones((2, 64, 64, 3))
      >>> h = net.encode(variables, x, "layer3")
      >>> h.shape
      (2, 4, 4, 32)
      >>> bool(jnp.allclose(net.decode(variables, h, "layer3"), net.apply(variables, x)))
      True
    """

    config: ResNetConfig
    torch_init: ClassVar[TorchInit] = TorchInit(conv_fan="out", classifier_bias="uniform")
    standard_layers: ClassVar[StandardLayers] = StandardLayers(
        bottleneck="layer3",  # as DenseNet's denseblock3: the last block but one, 1/16 scale
        multilayer=("layer1", "layer2", "layer3"),
        grad_cam="layer4",
    )

    @property
    def module(self) -> _ResNetModule:
        return _ResNetModule(self.config)
