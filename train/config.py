"""The training configuration: one frozen dataclass, built by each ``configs/NAME.py``.

A config file defines ``get_config() -> TrainConfig`` and starts with a docstring giving the
command that runs it and what it reaches. Fields not set keep the defaults below.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

TASKS = ("multilabel", "regression")
LOSSES = ("bce", "weighted_bce", "mse")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; the run is a pure function of it (and of the data).

    Data:
      dataset, dataset_config: a TFDS builder of ``iba_jax.data`` and its config.
      data_dir: where the data set is built (or gets built: the phantoms build themselves).
      manual_dir: the downloaded release, for NIH and BrixIA.
      train_split, eval_split: split names.
      target: the feature the model predicts (``labels``, ``global_score``, ``detector_labels``).
      label_names: one name per output, stored in the exported bundle.
      max_train_examples: use only the first N training examples (None: all).
      label_noise: the share of training labels flipped (multilabel only; 0: none). Each label
        of each example is flipped or not by a draw fixed by (seed, example), the same in every
        epoch, like an annotator's mistakes; the validation split keeps its labels. Gives a
        less confident model: where a share p of labels is flipped, the best predicted
        probability is 1 - p, not 1.

    Model:
      arch: ``densenet121`` ... ``tiny`` (``iba_jax.models.ARCHITECTURES``).
      arch_overrides: DenseNetConfig fields to change (e.g. ``{"block_config": (2, 2, 2, 2)}``).
      in_channels: 1 (grayscale) or 3 (the image is repeated, as for torchvision models).
      head: ``linear``, ``sigmoid`` or ``relu`` (what the exported model applies at inference).
      normalization: ``imagenet``, ``xrv`` or ``none`` (``iba_jax.data.preprocess``).
      init_from: a model bundle or a torchvision-style weights file (``.pth``/``.npz``/
        ``.safetensors``) to start from; its classifier is replaced when the output count
        differs.
      freeze_until: a layer name (``transition2`` in the paper's BrixIA models): it and every
        stage before it run as a fixed feature extractor; their parameters and BatchNorm
        statistics stay as initialised.

    Optimisation:
      task, loss: ``multilabel`` with ``bce`` or ``weighted_bce`` (pos_weight = negatives /
        positives per class on the training split), or ``regression`` with ``mse``.
      optimizer, learning_rate, momentum, weight_decay, schedule, warmup_steps, epochs,
      batch_size: the usual; weight decay is decoupled (AdamW / SGD with decayed weights).
      augment: random resized crop (area ``crop_scale``), rotation (``rotate_degrees``) and
        translation (``translate``, share of the side), as one affine map per image.
      dtype: ``bfloat16`` computes the network in bf16 (for GPUs/TPUs); parameters stay float32.

    Bookkeeping:
      seed: data order, initialisation, augmentation and dropout all derive from it.
      checkpoint_every_steps: save the training state this often (and at every epoch end).
      keep_checkpoints: how many of the latest to keep.
      best_metric, best_mode: the validation metric that selects ``best_model`` (``max``/``min``).
      stop_after_steps: end the run early at this step (for tests of resumption).
    """

    dataset: str = "cxr_phantoms"
    dataset_config: str = "classification_64"
    data_dir: str = "~/tensorflow_datasets"
    manual_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    target: str = "labels"
    label_names: tuple[str, ...] = ()
    max_train_examples: int | None = None
    label_noise: float = 0.0

    arch: str = "densenet121"
    arch_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    in_channels: int = 3
    head: str = "sigmoid"
    normalization: str = "imagenet"
    image_size: int = 224
    init_from: str | None = None
    freeze_until: str | None = None

    task: str = "multilabel"
    loss: str = "bce"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    epochs: int = 10
    batch_size: int = 32
    augment: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    rotate_degrees: float = 5.0
    translate: float = 0.05
    dtype: str = "float32"

    seed: int = 0
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 2
    best_metric: str = "mean_auc"
    best_mode: str = "max"
    stop_after_steps: int | None = None

    def __post_init__(self) -> None:
        for name, choices in (
            ("task", TASKS),
            ("loss", LOSSES),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("dtype", DTYPES),
            ("best_mode", ("max", "min")),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name}: expected one of {', '.join(choices)}; got {value!r}.")
        if (self.task == "regression") != (self.loss == "mse"):
            raise ValueError(
                f"loss: expected mse for regression and bce/weighted_bce for multilabel; got "
                f"task={self.task!r}, loss={self.loss!r}."
            )
        if not 0.0 <= self.label_noise < 0.5:
            raise ValueError(
                f"label_noise: expected a share in [0, 0.5); got {self.label_noise!r}."
            )
        if self.label_noise and self.task != "multilabel":
            raise ValueError(
                f"label_noise: flips labels of a multilabel task; got task={self.task!r}."
            )
        if not self.label_names:
            raise ValueError("label_names: expected one name per output; got none.")
        for name in ("epochs", "batch_size", "checkpoint_every_steps", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer; got {value!r}.")

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(spec: str) -> TrainConfig:
    """Runs ``get_config(arg)`` of ``FILE[:ARG]`` (big_vision's convention), e.g.
    ``train/configs/nih_bce.py:classes=8,init_from=densenet121.pth``."""
    file, _, arg = spec.partition(":")
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"--config: expected a config file; {path} does not exist.")
    module_spec = importlib.util.spec_from_file_location(f"train_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config: {path} defines no get_config().")
    return module.get_config(parse_config_arg(arg)) if arg else module.get_config()


def parse_config_arg(arg: str) -> dict[str, str]:
    """``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}``: the options a config file accepts."""
    options = {}
    for item in filter(None, arg.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--config: expected KEY=VALUE options after ':'; got {item!r}.")
        options[key.strip()] = value.strip()
    return options


def check_options(options: dict[str, str] | None, allowed: tuple[str, ...]) -> dict[str, str]:
    """The options of a config file, refusing unknown ones by name."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"--config: unknown option(s) {unknown}; this config accepts {allowed}.")
    return options
