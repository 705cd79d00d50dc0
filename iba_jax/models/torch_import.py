"""PyTorch state dicts of DenseNets and ResNets (torchvision, torchxrayvision, CheXNet) to
variables of this package's ``DenseNet`` and ``ResNet``.

Only tensors are read, never arbitrary pickled objects:

* ``.npz``: ``numpy.load(..., allow_pickle=False)``;
* ``.safetensors``: the safetensors format (tensors only by design);
* ``.pt`` / ``.pth`` / ``.pth.tar``: ``torch.load(..., weights_only=True)``, which refuses anything
  but tensors and plain containers. It needs torch (``pip install 'iba-jax[torch]'``); without
  it, export the tensors to ``.npz`` in your own torch environment (see the README).

The family is recognised by its first convolution (``features.conv0.weight``: a DenseNet;
``conv1.weight`` beside ``layer1.0.conv1.weight``: a ResNet). Accepted key spellings, all mapped
to torchvision's:

* any wrapper prefix (``module.``, ``module.densenet121.``, torchxrayvision's ``model.`` of its
  ResNet, ...);
* the old dense-layer names ``norm.1``, ``relu.1``, ``conv.1``, ``norm.2``, ``conv.2`` (CheXNet);
* ``classifier.0.weight`` for a ``Sequential(Linear, Sigmoid/ReLU)`` head;
* ``num_batches_tracked`` and torchxrayvision's ``op_threshs`` are ignored.

The architecture (DenseNet: blocks, growth rate, bn_size; ResNet: block type, blocks per stage,
width; both: classes and input channels) is inferred from the shapes, or checked against a
config the caller gives. A dict that does not match is refused with
an error that lists every missing and unexpected key and every shape mismatch: nothing is ever
loaded partially.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from iba_jax import checks
from iba_jax.models.densenet import HEADS, DenseNetConfig, Head, Variables
from iba_jax.models.families import Config, family_of, model_for
from iba_jax.models.resnet import ResNetConfig

StateDict = dict[str, np.ndarray]

_CONV0 = "features.conv0.weight"
_RESNET_ANCHOR = "layer1.0.conv1.weight"
_OLD_LAYER_NAME = re.compile(r"(denselayer\d+)\.(norm|relu|conv)\.([12])\.")
_IGNORED_SUFFIXES = ("num_batches_tracked", "op_threshs")
_FLAX_TO_TORCH_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_MAX_LISTED = 25


class StateDictMismatchError(ValueError):
    """A state dict that does not fit the model it is loaded into."""


def load_state_dict(path: str | Path) -> StateDict:
    """Reads the tensors of a ``.npz``, ``.safetensors`` or ``.pt``/``.pth`` file as numpy arrays.

    A torch checkpoint that wraps the weights (``{"state_dict": ..., "epoch": ...}``, as CheXNet's
    ``model.pth.tar``) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: expected a weights file; {str(path)!r} does not exist.")
    name = path.name.lower()
    if name.endswith(".npz"):
        if not zipfile.is_zipfile(path):  # numpy would call it pickled data, and suggest unpickling
            raise ValueError(
                f"path: {path.name!r} is not a .npz archive of tensors (not a zip file)."
            )
        try:
            with np.load(path, allow_pickle=False) as archive:
                if not hasattr(archive, "files"):
                    raise ValueError("it holds one array, not named tensors")
                return {k: archive[k] for k in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"path: {path.name!r} is not a .npz archive of tensors ({err})."
            ) from err
    if name.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"path: {path.name!r} is not a safetensors file ({err}).") from err
    if name.endswith((".pt", ".pth", ".pth.tar", ".ckpt")):
        return _load_torch_file(path)
    raise ValueError(f"path: expected a .npz, .safetensors, .pt or .pth file; got {path.name!r}.")


def _is_torch_file(path: Path) -> bool:
    """A file torch.save wrote: a zip archive (torch >= 1.6) or a pickle (older; protocol 2+
    starts with 0x80)."""
    with path.open("rb") as f:
        start = f.read(2)
    return zipfile.is_zipfile(path) or (len(start) == 2 and start[0] == 0x80 and start[1] >= 2)


def _load_torch_file(path: Path) -> StateDict:
    if not _is_torch_file(path):
        raise ValueError(
            f"path: {path.name!r} is not a torch file (neither the zip archive nor the pickle "
            "that torch.save writes)."
        )
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"path: reading {path.name!r} needs torch, which is not installed. Either "
            "`pip install 'iba-jax[torch]'`, or export the tensors once in your torch "
            "environment: python -c \"import torch, numpy as np; sd = torch.load('IN.pth', "
            "map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); "
            "np.savez('OUT.npz', **{k: v.numpy() for k, v in sd.items()})\""
        ) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError and others
        raise ValueError(
            f"path: {path.name!r} holds more than tensors (torch.load with weights_only=True "
            f"refused it: {err}). torchxrayvision files are whole pickled modules: export their "
            "state_dict to .npz as the README shows."
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"path: expected a state dict in {path.name!r}; got {type(obj).__name__}.")
    return {k: v.detach().cpu().float().numpy() for k, v in obj.items() if torch.is_tensor(v)}


def _prefix_of(state_dict: Mapping[str, Any], anchor: str) -> list[str]:
    return [k[: -len(anchor)] for k in state_dict if k.endswith(anchor)]


def detect_family(state_dict: Mapping[str, Any]) -> str:
    """``"densenet"`` or ``"resnet"``, from the keys of the first convolution.

    Raises:
      StateDictMismatchError: if neither is found once (under any prefix).
    """
    densenet = _prefix_of(state_dict, _CONV0)
    resnet = [p for p in _prefix_of(state_dict, _RESNET_ANCHOR) if p + "conv1.weight" in state_dict]
    if len(densenet) == 1 and not resnet:
        return "densenet"
    if len(resnet) == 1 and not densenet:
        return "resnet"
    raise StateDictMismatchError(
        f"state_dict: expected one DenseNet ({_CONV0!r}) or one ResNet ({_RESNET_ANCHOR!r} beside "
        f"'conv1.weight') under one prefix; found {len(densenet)} and {len(resnet)} among "
        f"{len(state_dict)} keys."
    )


def canonical_state_dict(state_dict: Mapping[str, Any]) -> StateDict:
    """The state dict with torchvision's key names (its family's); ignored entries dropped.

    Raises:
      StateDictMismatchError: if it is neither a DenseNet's nor a ResNet's.
    """
    family = detect_family(state_dict)
    anchor = _CONV0 if family == "densenet" else _RESNET_ANCHOR
    (prefix,) = _prefix_of(state_dict, anchor)
    out = {}
    for key, value in state_dict.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if key.startswith(prefix):
            key = key[len(prefix) :]
        if family == "densenet":
            key = _OLD_LAYER_NAME.sub(r"\1.\2\3.", key)
            key = re.sub(r"^classifier\.0\.", "classifier.", key)
        out[key] = np.asarray(value)
    return out


def _shape_of(sd: StateDict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise StateDictMismatchError(
            f"state_dict: cannot infer the architecture without {key!r}; "
            f"keys start with {sorted(sd)[:5]}."
        )
    return tuple(sd[key].shape)


def _counted(sd: StateDict, pattern: str) -> list[int]:
    """Per stage 1, 2, ...: the largest index that ``pattern`` (with the stage number
    formatted in, its index the first group) finds among the keys, until a stage has none."""
    counts: list[int] = []
    while True:
        found = re.compile(pattern.format(len(counts) + 1))
        indices = {int(m.group(1)) for k in sd if (m := found.match(k))}
        if not indices:
            return counts
        counts.append(max(indices))


def infer_config(state_dict: Mapping[str, Any], *, head: Head = "linear") -> Config:
    """The architecture that the tensor shapes of a state dict describe (DenseNet or ResNet)."""
    family = detect_family(state_dict)
    sd = canonical_state_dict(state_dict)
    if family == "resnet":
        layers = [n + 1 for n in _counted(sd, r"layer{}\.(\d+)\.")]
        conv1 = _shape_of(sd, "conv1.weight")
        return ResNetConfig(
            block="bottleneck" if "layer1.0.conv3.weight" in sd else "basic",
            layers=tuple(layers),
            width=conv1[0],
            num_classes=_shape_of(sd, "fc.weight")[0],
            in_channels=conv1[1],
            head=head,
        )
    block_config = _counted(sd, r"features\.denseblock{}\.denselayer(\d+)\.")
    if not block_config:
        raise StateDictMismatchError("state_dict: no 'features.denseblock1.*' keys found.")
    growth_rate = _shape_of(sd, "features.denseblock1.denselayer1.conv2.weight")[0]
    bottleneck = _shape_of(sd, "features.denseblock1.denselayer1.conv1.weight")[0]
    conv0 = _shape_of(sd, _CONV0)
    return DenseNetConfig(
        block_config=tuple(block_config),
        growth_rate=growth_rate,
        num_init_features=conv0[0],
        bn_size=bottleneck // growth_rate,
        num_classes=_shape_of(sd, "classifier.weight")[0],
        in_channels=conv0[1],
        head=head,
    )


def torch_key(path: tuple[str, ...], family: str = "densenet") -> str:
    """torchvision's state-dict key for a flax variable path such as
    ``("params", "denseblock1", "denselayer1", "conv1", "kernel")`` (a DenseNet's features sit
    under ``features.``, its classifier and every ResNet key at the top)."""
    collection, *modules, leaf = path
    prefix = "features." if family == "densenet" and modules[0] != "classifier" else ""
    return prefix + ".".join(modules) + "." + _FLAX_TO_TORCH_LEAF[(collection, leaf)]


def _to_torch_layout(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if leaf == "kernel" and len(shape) == 4:  # HWIO -> OIHW
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:  # (in, out) -> (out, in)
        return (shape[1], shape[0])
    return shape


def _from_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {i}" for i in shown) + more


def variables_from_state_dict(
    state_dict: Mapping[str, Any],
    config: Config | None = None,
    *,
    head: Head = "linear",
) -> tuple[Variables, Config]:
    """Converts a PyTorch DenseNet or ResNet state dict to ``(variables, config)``.

    Args:
      state_dict: torch names to arrays (numpy or anything ``np.asarray`` accepts).
      config: the architecture to load into (a ``DenseNetConfig`` or ``ResNetConfig``);
        inferred from the shapes when ``None``.
      head: the head to record in an inferred config (ignored when ``config`` is given).

    Raises:
      StateDictMismatchError: listing every missing key, unexpected key and shape mismatch.
    """
    checks.check_choice("head", head, HEADS)
    sd = canonical_state_dict(state_dict)
    if config is None:
        config = infer_config(sd, head=head)
    family = family_of(config)
    found = detect_family(sd)
    if found != family:
        raise StateDictMismatchError(
            f"state_dict: expected a {family}'s weights for {config}; got a {found}'s."
        )
    abstract = model_for(config).abstract_variables()
    expected = {
        torch_key(tuple(k.key for k in path), family): (
            path,
            _to_torch_layout(path[-1].key, leaf.shape),
        )
        for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]
    }
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mismatched = sorted(
        f"{k}: expected {expected[k][1]}, got {tuple(sd[k].shape)}"
        for k in set(expected) & set(sd)
        if tuple(sd[k].shape) != expected[k][1]
    )
    not_float = sorted(
        f"{k}: dtype {sd[k].dtype}"
        for k in set(expected) & set(sd)
        if not np.issubdtype(sd[k].dtype, np.floating)
    )
    not_finite = sorted(
        f"{k}: {np.size(sd[k]) - np.count_nonzero(np.isfinite(sd[k]))} of {np.size(sd[k])}"
        for k in set(expected) & set(sd)
        if np.issubdtype(sd[k].dtype, np.floating) and not np.all(np.isfinite(sd[k]))
    )
    problems = [
        (title, items)
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
            ("non-float tensors", not_float),
            ("tensors with NaN or infinite values", not_finite),
        )
        if items
    ]
    if problems:
        counts = "; ".join(f"{len(items)} {title}" for title, items in problems)
        raise StateDictMismatchError(
            f"state_dict does not fit {config} ({counts}); nothing was loaded.\n"
            + "\n".join(_listing(title, items) for title, items in problems)
        )

    def convert(path: tuple[Any, ...], _: Any) -> np.ndarray:
        key = torch_key(tuple(k.key for k in path), family)
        return _from_torch_layout(path[-1].key, sd[key].astype(np.float32))

    variables = jax.tree_util.tree_map_with_path(convert, abstract)
    return jax.tree.map(jax.numpy.asarray, variables), config
