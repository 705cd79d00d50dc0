"""What every attribution method needs of a network: the :class:`Model` protocol.

A model is a network cut at named layers, as pure functions of an explicit variables tree:

* ``encode(variables, x, layer)``: the output ``(N, h, w, c)`` of ``layer`` for images ``x``
  ``(N, H, W, C)``; with a sequence of names, a dict ``{name: output}``;
* ``decode(variables, h, layer)``: the logits ``(N, K)`` from ``h``, the output of ``layer``;
* ``apply(variables, x)``: the logits of images ``x``;
* ``layer_names``: the cut points, in network order;
* ``num_outputs`` (K), ``in_channels`` (C), ``min_image_size``: what it accepts and returns;
* ``link``: its head on the logits (identity, sigmoid, ReLU) as a function that compares equal
  for equal models (a module-level function, not a bound method), so that the losses built
  from it reuse the compiled loop.

``DenseNet`` and ``ResNet`` satisfy it; :class:`FunctionModel` makes a model of a plain pair of
functions (any Flax module, Equinox model or hand-written network). A model is a static argument
of the compiled loop: it must be hashable, and equal models must hash equal (frozen dataclasses
do both).

Optional abilities, used where present and asked for by name where absent:
``run_between(variables, h, start, stop)`` (CoIBA's shared bottleneck),
``abstract_variables()`` (``images_per_call="auto"``), ``receptive_field(layer)`` (the
locality report) and the LRP rules (DenseNet's layers only).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, overload, runtime_checkable

import jax

from iba_jax import checks

Variables = Any
"""A model's variables: any pytree (Flax's ``{"params", "batch_stats"}`` for the shipped ones)."""


@runtime_checkable
class Model(Protocol):
    """A network cut at named layers (see the module doc)."""

    @property
    def layer_names(self) -> tuple[str, ...]: ...

    @property
    def num_outputs(self) -> int: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def min_image_size(self) -> int: ...

    @property
    def link(self) -> Callable[[jax.Array], jax.Array]: ...

    @overload
    def encode(self, variables: Variables, x: jax.Array, layer: str) -> jax.Array: ...

    @overload
    def encode(
        self, variables: Variables, x: jax.Array, layer: Sequence[str]
    ) -> dict[str, jax.Array]: ...

    def decode(self, variables: Variables, h: jax.Array, layer: str) -> jax.Array: ...

    def apply(self, variables: Variables, x: jax.Array) -> jax.Array: ...

    def __hash__(self) -> int: ...


class SteppedModel(Model, Protocol):
    """A :class:`Model` that also runs between two of its layers (CoIBA's shared bottleneck)."""

    def run_between(
        self, variables: Variables, h: jax.Array, start: str, stop: str
    ) -> jax.Array: ...


class AbstractModel(Model, Protocol):
    """A :class:`Model` that also gives its variables' shapes (the memory estimate)."""

    def abstract_variables(self) -> Variables: ...


class StandardLayers(NamedTuple):
    """A family's layers for the paper's methods, where a model declares them (an optional
    ``standard_layers`` attribute): ``bottleneck``, single-layer IBA's (the paper: DenseNet's
    denseblock3); ``multilayer``, Multi-layer IBA's, finest first (denseblock1-3); ``grad_cam``,
    Grad-CAM's, the last feature map (norm5)."""

    bottleneck: str
    multilayer: tuple[str, ...]
    grad_cam: str


def standard_layers(model: object, argument: str) -> StandardLayers:
    """The model's :class:`StandardLayers`; raises, naming ``argument`` (the caller's layer
    argument, left out), when the model declares none."""
    layers = getattr(model, "standard_layers", None)
    if not isinstance(layers, StandardLayers):
        names = getattr(model, "layer_names", ())
        raise ValueError(
            f"{argument}: {type(model).__name__} declares no standard layers (standard_layers); "
            f"name the layer(s), among {tuple(names)}."
        )
    return layers


def identity(logits: jax.Array) -> jax.Array:
    """The identity head: the logits as they are."""
    return logits


def check_model(model: object) -> None:
    """Raises, naming what is missing, unless ``model`` satisfies :class:`Model`."""
    missing = [
        name
        for name in (
            "layer_names",
            "num_outputs",
            "in_channels",
            "min_image_size",
            "link",
            "encode",
            "decode",
            "apply",
        )
        if not hasattr(model, name)
    ]
    if missing:
        raise TypeError(
            f"model: expected an iba_jax Model (encode, decode, apply, layer_names, num_outputs, "
            f"in_channels, min_image_size, link); {type(model).__name__} lacks {missing}. "
            "Wrap a pair of functions with iba_jax.FunctionModel."
        )


def require(model: object, ability: str, purpose: str) -> None:
    """Raises unless ``model`` has the optional ``ability`` that ``purpose`` needs."""
    if not hasattr(model, ability):
        raise ValueError(
            f"model: {purpose} needs the model's {ability}(), which {type(model).__name__} "
            "does not have."
        )


@dataclasses.dataclass(frozen=True)
class FunctionModel:
    """A :class:`Model` from a plain pair of functions.

    Attributes:
      encoder: ``(variables, x, layer) -> h``, the output of ``layer``.
      decoder: ``(variables, h, layer) -> logits``, the rest of the network.
      layer_names: the layers ``encoder`` and ``decoder`` accept, in network order.
      num_outputs: the number of logits.
      in_channels: the channels of the images it takes.
      min_image_size: the smallest image side it takes.
      link: the head on the logits (default identity); a module-level function.
      standard_layers: the layers the methods take when none is named (optional; without
        them every method needs its layer).

    ``apply`` is ``decode(encode(x, last), last)`` with the last of ``layer_names``. Pass
    module-level functions (or other objects equal across calls): the model is a static
    argument of the compiled loop, and a new lambda compiles it anew.

    Example:
      >>> import jax.numpy as jnp
      >>> def features(variables, x, layer):
      ...     return jnp.tanh(x * variables["w"])
      >>> def head(variables, h, layer):
      ...     return jnp.mean(h, axis=(1, 2))
      >>> model = FunctionModel(features, head, ("features",), num_outputs=3, in_channels=3)
      >>> model.apply({"w": 2.0}, jnp.ones((2, 8, 8, 3))).shape
      (2, 3)
    """

    encoder: Callable[[Variables, jax.Array, str], jax.Array]
    decoder: Callable[[Variables, jax.Array, str], jax.Array]
    layer_names: tuple[str, ...]
    num_outputs: int
    in_channels: int
    min_image_size: int = 1
    link: Callable[[jax.Array], jax.Array] = identity
    standard_layers: StandardLayers | None = None

    def __post_init__(self) -> None:
        if isinstance(self.layer_names, str) or not self.layer_names:
            raise ValueError(
                f"layer_names: expected a non-empty tuple of layer names; got {self.layer_names!r}."
            )
        object.__setattr__(self, "layer_names", tuple(self.layer_names))
        checks.check_positive_int("num_outputs", self.num_outputs)
        checks.check_positive_int("in_channels", self.in_channels)
        checks.check_positive_int("min_image_size", self.min_image_size)
        if self.standard_layers is not None:
            if not isinstance(self.standard_layers, StandardLayers):
                raise ValueError(
                    "standard_layers: expected a StandardLayers or None; got "
                    f"{type(self.standard_layers).__name__}."
                )
            bottleneck, multilayer, grad_cam = self.standard_layers
            checks.check_names(
                "standard_layers", (bottleneck, *multilayer, grad_cam), self.layer_names
            )

    @overload
    def encode(self, variables: Variables, x: jax.Array, layer: str) -> jax.Array: ...

    @overload
    def encode(
        self, variables: Variables, x: jax.Array, layer: Sequence[str]
    ) -> dict[str, jax.Array]: ...

    def encode(
        self, variables: Variables, x: jax.Array, layer: str | Sequence[str]
    ) -> jax.Array | dict[str, jax.Array]:
        names = (layer,) if isinstance(layer, str) else tuple(layer)
        checks.check_names("layer", names, self.layer_names)
        out = {name: self.encoder(variables, x, name) for name in names}
        return out[layer] if isinstance(layer, str) else out

    def decode(self, variables: Variables, h: jax.Array, layer: str) -> jax.Array:
        checks.check_choice("layer", layer, self.layer_names)
        return self.decoder(variables, h, layer)

    def apply(self, variables: Variables, x: jax.Array) -> jax.Array:
        last = self.layer_names[-1]
        return self.decoder(variables, self.encoder(variables, x, last), last)


@functools.partial(jax.jit, static_argnums=0)
def predict(model: Model, variables: Variables, images: jax.Array) -> jax.Array:
    """The model's outputs (its head on the logits) for ``images``, as one program compiled
    once per model and input shape: called eagerly, ``model.apply`` compiles each of the
    forward pass's operations on its own (hundreds for DenseNet-121, about 0.04 s each on a
    CPU). ``model.apply`` itself stays uncompiled, so that method interception (LRP's rules)
    sees every call."""
    return model.link(model.apply(variables, images))
