"""What DenseNet and ResNet share: a network of named stages, run between any two of them.

A family defines its linen module's stages (``StagedModule.stage``: one named stage of the
network, in torch's module names) and its configuration (``layer_names``, ``channels(layer)``,
``num_classes``, ``in_channels``, ``min_image_size``, ``head``); :class:`StagedNetwork` turns
them into the pure functions of the :class:`~iba_jax.models.Model` protocol:

* ``encode(variables, x, layer)`` runs the network up to and including ``layer`` (several
  layers: one pass that stops at the deepest);
* ``decode(variables, h, layer)`` runs the rest, up to the logits, so that
  ``decode(v, encode(v, x, L), L) == apply(v, x)`` for every ``L``;
* ``run_between(variables, h, start, stop)`` runs the stages strictly after ``start`` up to
  ``stop``;
* ``init`` draws torch's initialisation of the family (:class:`TorchInit`), as one program.

Images are channels-last, ``(N, H, W, C)``; every feature map is ``(N, h, w, c)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, cast, overload

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iba_jax import checks
from iba_jax.models.protocol import identity

Head = Literal["linear", "sigmoid", "relu"]
HEADS: tuple[str, ...] = ("linear", "sigmoid", "relu")
Variables = dict[str, Any]

_HEAD_FUNCTIONS = {"linear": identity, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}


def head_function(head: Head) -> Callable[[jax.Array], jax.Array]:
    """What a head applies to the logits: identity, sigmoid or ReLU, as one module-level
    function per head. An objective that holds it (a static argument of the compiled loop) is
    equal from call to call, so the program is reused (a model's ``link``)."""
    checks.check_choice("head", head, HEADS)
    return _HEAD_FUNCTIONS[head]


class JsonConfig:
    """``to_dict``/``from_dict`` of a frozen dataclass config whose tuple fields JSON keeps as
    lists (bundles record configs in ``bundle.json``)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tuples as lists); :meth:`from_dict` inverts it."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()  # type: ignore[call-overload]
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """The config a :meth:`to_dict` dict describes; unknown fields are refused."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)} in {d!r}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def batch_norm(name: str) -> nn.BatchNorm:
    """torch's BatchNorm2d: ε 1e-5, momentum 0.1 in torch's convention (0.9 in flax's)."""
    return nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=name)


def conv(features: int, kernel: int, name: str, *, stride: int = 1, pad: int = 0) -> nn.Conv:
    """torch's Conv2d without bias, with explicit symmetric padding (not SAME, which pads
    asymmetrically for even sizes and would shift the grid)."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        name=name,
    )


class StagedModule(nn.Module):
    """Runs the stages strictly after ``start`` up to the last name in ``stops``; the stage
    after the last layer is the classifier (global average pool and Linear)."""

    config: Any
    classifier: ClassVar[str] = "classifier"

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        *,
        start: str | None,
        stops: tuple[str, ...],
        train: bool,
    ) -> dict[str, jax.Array]:
        order = (*self.config.layer_names, self.classifier)
        first = 0 if start is None else order.index(start) + 1
        last = max(order.index(name) for name in stops)
        out = {}
        for name in order[first : last + 1]:
            h = self.stage(name, h, train)
            if name in stops:
                out[name] = h
        return out

    def stage(self, name: str, h: jax.Array, train: bool) -> jax.Array:
        raise NotImplementedError


class TorchInit(NamedTuple):
    """A family's torch initialisation: convolutions ``kaiming_normal_`` (normal, std
    √(2 / fan)) with fan ``conv_fan`` ("in" or "out"); the classifier's weight torch's Linear
    default (uniform within ±1/√fan_in) and its bias 0 or that same default (``classifier_bias``
    "zero" or "uniform"); BatchNorm scale 1, bias 0, running mean 0 and variance 1."""

    conv_fan: Literal["in", "out"]
    classifier_bias: Literal["zero", "uniform"]


@dataclasses.dataclass(frozen=True)
class StagedNetwork:
    """The pure API of a staged network (see the module doc); a family subclasses it with its
    ``module`` and ``torch_init``. Frozen: hashable, so it can be a static argument of
    ``jax.jit``."""

    config: Any
    torch_init: ClassVar[TorchInit]

    @property
    def module(self) -> StagedModule:
        raise NotImplementedError

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.config.layer_names

    @property
    def num_outputs(self) -> int:
        return self.config.num_classes

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def min_image_size(self) -> int:
        return self.config.min_image_size

    @property
    def link(self) -> Callable[[jax.Array], jax.Array]:
        """The configured head as a module-level function (equal for equal models)."""
        return head_function(self.config.head)

    def receptive_field(self, layer: str) -> int:
        """The side, in input pixels, of one ``layer`` cell's receptive field."""
        return self.config.receptive_field(layer)

    def init(self, key: jax.Array, image_size: int = 224) -> Variables:
        """Fresh variables ``{"params", "batch_stats"}`` (the family's torch initialisation),
        made by one compiled program per config and image size (eagerly, each of the network's
        operations would compile on its own, which takes longer)."""
        return _initial_variables(self, key, image_size)

    def abstract_variables(self) -> Variables:
        """The variables' tree of ``jax.ShapeDtypeStruct``, computed without allocating them."""
        return jax.eval_shape(
            lambda key: self.init(key, self.config.min_image_size), jax.random.key(0)
        )

    def apply(self, variables: Variables, x: jax.Array) -> jax.Array:
        """Logits ``(N, num_classes)`` of images ``x`` ``(N, H, W, C)``, in inference mode."""
        self._check_images(x)
        classifier = self.module.classifier
        return self._run(variables, x, None, (classifier,))[classifier]

    def apply_train(
        self, variables: Variables, x: jax.Array, frozen_until: str | None = None
    ) -> tuple[jax.Array, Variables]:
        """Logits in training mode (batch statistics) and the updated ``batch_stats``.

        With ``frozen_until`` (a layer name), the stages up to and including it run in inference
        mode without gradients, as a fixed feature extractor: their BatchNorm statistics are
        neither used from the batch nor updated.
        """
        self._check_images(x)
        if frozen_until is not None:
            checks.check_choice("frozen_until", frozen_until, self.layer_names)
            x = jax.lax.stop_gradient(self._run(variables, x, None, (frozen_until,))[frozen_until])
        classifier = self.module.classifier
        out, updates = self.module.apply(
            variables,
            x,
            start=frozen_until,
            stops=(classifier,),
            train=True,
            mutable=["batch_stats"],
        )
        return out[classifier], updates["batch_stats"]

    @overload
    def encode(self, variables: Variables, x: jax.Array, layer: str) -> jax.Array: ...  # type: ignore[overload-overlap]  # a str is a Sequence[str] too: this one is first

    @overload
    def encode(
        self, variables: Variables, x: jax.Array, layer: Sequence[str]
    ) -> dict[str, jax.Array]: ...

    def encode(
        self, variables: Variables, x: jax.Array, layer: str | Sequence[str]
    ) -> jax.Array | dict[str, jax.Array]:
        """The output of ``layer`` for images ``x``; a dict ``{name: output}`` for several names.

        Several layers come from one pass through the network, which stops at the deepest one.
        """
        self._check_images(x)
        names = (layer,) if isinstance(layer, str) else tuple(layer)
        checks.check_names("layer", names, self.layer_names)
        out = self._run(variables, x, None, names)
        return out[layer] if isinstance(layer, str) else out

    def decode(self, variables: Variables, h: jax.Array, layer: str) -> jax.Array:
        """Logits from ``h``, the output of ``layer``, by running the rest of the network."""
        checks.check_choice("layer", layer, self.layer_names)
        checks.check_rank("h", h, 4, "(N, h, w, channels) as returned by encode")
        expected = self.config.channels(layer)
        if h.shape[-1] != expected:
            raise ValueError(
                f"h: expected {expected} channels (last axis) for the output of {layer!r}; "
                f"got shape {tuple(h.shape)}."
            )
        classifier = self.module.classifier
        return self._run(variables, h, layer, (classifier,))[classifier]

    def run_between(self, variables: Variables, h: jax.Array, start: str, stop: str) -> jax.Array:
        """The output of ``stop`` from ``h``, the output of the earlier layer ``start``."""
        checks.check_choice("start", start, self.layer_names)
        checks.check_choice("stop", stop, self.layer_names)
        if self.layer_names.index(stop) <= self.layer_names.index(start):
            raise ValueError(f"stop: expected a layer after {start!r}; got {stop!r}.")
        return self._run(variables, h, start, (stop,))[stop]

    def _run(
        self, variables: Variables, h: jax.Array, start: str | None, stops: tuple[str, ...]
    ) -> dict[str, jax.Array]:
        return cast(
            dict[str, jax.Array],
            self.module.apply(variables, h, start=start, stops=stops, train=False),
        )

    def _check_images(self, x: jax.Array) -> None:
        checks.check_image_batch(
            "x", x, channels=self.config.in_channels, min_size=self.config.min_image_size
        )


@functools.partial(jax.jit, static_argnums=(0, 2))
def _initial_variables(model: StagedNetwork, key: jax.Array, image_size: int) -> Variables:
    """The family's torch initialisation (:class:`TorchInit`), by variable path.

    All convolution kernels are slices of one normal draw: drawn per kernel (as Flax's
    initialisers do), DenseNet-121's ~120 random fusions took 9 s to compile on a CPU.
    """
    rules = model.torch_init
    x = jax.ShapeDtypeStruct((1, image_size, image_size, model.config.in_channels), jnp.float32)
    classifier = model.module.classifier
    init = functools.partial(model.module.init, start=None, stops=(classifier,), train=False)
    leaves, tree = jax.tree_util.tree_flatten_with_path(jax.eval_shape(init, key, x))
    named = [(_name(path), leaf) for path, leaf in leaves]
    convolutions = [i for i, (name, leaf) in enumerate(named) if _is_conv_kernel(name, leaf)]
    sizes = [named[i][1].size for i in convolutions]
    conv_key, classifier_key = jax.random.split(key)
    draws = jnp.split(jax.random.normal(conv_key, (sum(sizes),)), np.cumsum(sizes)[:-1])
    values: list[Any] = [None] * len(named)
    for i, draw in zip(convolutions, draws, strict=True):
        shape = named[i][1].shape  # HWIO
        fan = np.prod(shape[:-1]) if rules.conv_fan == "in" else np.prod(shape[:2]) * shape[3]
        values[i] = draw.reshape(shape) * np.sqrt(2.0 / fan)
    bias_key = jax.random.fold_in(classifier_key, 1)
    fan_in = dict(named)[f"params/{classifier}/kernel"].shape[0]
    bound = 1.0 / np.sqrt(fan_in)
    for i, (name, leaf) in enumerate(named):
        if values[i] is not None:
            continue
        if name == f"params/{classifier}/kernel":
            values[i] = jax.random.uniform(classifier_key, leaf.shape, leaf.dtype, -bound, bound)
        elif name == f"params/{classifier}/bias" and rules.classifier_bias == "uniform":
            values[i] = jax.random.uniform(bias_key, leaf.shape, leaf.dtype, -bound, bound)
        elif name.endswith(("/scale", "/var")):
            values[i] = jnp.ones(leaf.shape, leaf.dtype)
        elif name.endswith(("/bias", "/mean")):
            values[i] = jnp.zeros(leaf.shape, leaf.dtype)
        else:
            raise AssertionError(f"no initialisation rule for the variable {name}")
    return dict(jax.tree.unflatten(tree, values))


def _name(path: tuple) -> str:
    return "/".join(str(getattr(entry, "key", entry)) for entry in path)


def _is_conv_kernel(name: str, leaf: jax.ShapeDtypeStruct) -> bool:
    return name.startswith("params/") and name.endswith("/kernel") and leaf.ndim == 4
