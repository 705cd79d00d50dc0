"""The training loop: Optax updates on all local devices, Orbax checkpoints, resumable.

``train(cfg, workdir)`` is deterministic: data order, initialisation and augmentation derive
from ``cfg.seed`` (and the epoch and step), so a run killed at any point and started again with
the same arguments continues from its last checkpoint and ends, on a CPU, with the same
parameters as an uninterrupted run.

Writes into ``workdir``: ``checkpoints/`` (Orbax, the latest ``keep_checkpoints`` training
states, each with a sha256 of its arrays), ``metrics.csv`` (one row per epoch), ``best_model/``
(the model bundle with the best validation metric so far) and ``final_model/``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from iba_jax.bundle import InputSpec, ModelBundle, content_checksum, load_bundle, save_bundle
from iba_jax.data.preprocess import unit_range
from iba_jax.models import ARCHITECTURES, DenseNet
from iba_jax.models.torch_import import infer_config, load_state_dict, variables_from_state_dict
from iba_jax.records import append_row, read_rows
from train import augment, data, losses, metrics
from train.config import TrainConfig


class TrainState(NamedTuple):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def initial_state(variables: dict[str, Any], optimizer: optax.GradientTransformation) -> TrainState:
    """Step 0: the model's variables and a fresh optimiser state."""
    return TrainState(
        jnp.zeros((), jnp.int32),
        variables["params"],
        variables["batch_stats"],
        optimizer.init(variables["params"]),
    )


class CorruptCheckpointError(ValueError):
    """A checkpoint whose arrays do not match the checksum saved with them."""


# --------------------------------------------------------------------------- model and optimiser


def build_model(cfg: TrainConfig) -> DenseNet:
    config = ARCHITECTURES[cfg.arch](
        num_classes=cfg.num_outputs,
        in_channels=cfg.in_channels,
        head=cfg.head,
        **cfg.arch_overrides,
    )
    return DenseNet(config)


def initial_variables(cfg: TrainConfig, model: DenseNet, key: jax.Array) -> dict[str, Any]:
    """Fresh variables, or those of ``cfg.init_from`` with a new classifier where the output
    count differs (and conv0 summed over colour channels for a 1-channel model)."""
    fresh = model.init(key, cfg.image_size)
    if cfg.init_from is None:
        return fresh
    path = Path(cfg.init_from).expanduser()
    if path.is_dir():
        loaded = load_bundle(path).variables
    else:
        state_dict = load_state_dict(path)
        loaded, _ = variables_from_state_dict(state_dict, infer_config(state_dict))
    return _transplant(fresh, loaded, path)


def _transplant(fresh: dict[str, Any], loaded: dict[str, Any], path: Path) -> dict[str, Any]:
    def take(keypath, new, old):
        names = [getattr(k, "key", str(k)) for k in keypath]
        if new.shape == old.shape:
            return np.asarray(old, new.dtype)
        if names[1] == "conv0" and old.shape[:2] == new.shape[:2] and new.shape[2] == 1:
            return np.asarray(old, new.dtype).sum(axis=2, keepdims=True)  # RGB -> grayscale
        if names[1] == "classifier":
            return new  # another set of outputs: a fresh classifier
        raise ValueError(
            f"init_from: {path} does not fit this model at {'/'.join(names)}: "
            f"{old.shape} vs {new.shape}."
        )

    return jax.tree_util.tree_map_with_path(take, fresh, loaded)


def frozen_stages(model: DenseNet, freeze_until: str | None) -> tuple[str, ...]:
    if freeze_until is None:
        return ()
    names = model.layer_names
    if freeze_until not in names:
        raise ValueError(f"freeze_until: expected one of {', '.join(names)}; got {freeze_until!r}.")
    return names[: names.index(freeze_until) + 1]


def make_optimizer(
    cfg: TrainConfig, total_steps: int, params: Any, frozen: tuple[str, ...]
) -> optax.GradientTransformation:
    if cfg.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, cfg.learning_rate, cfg.warmup_steps, max(total_steps, cfg.warmup_steps + 1)
        )
    else:
        schedule = optax.constant_schedule(cfg.learning_rate)
    if cfg.optimizer == "adam":
        base = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    else:
        base = optax.chain(
            optax.add_decayed_weights(cfg.weight_decay), optax.sgd(schedule, cfg.momentum)
        )
    if not frozen:
        return base
    labels = {name: ("frozen" if name in frozen else "train") for name in params}
    return optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)


# --------------------------------------------------------------------------- steps


def model_inputs(cfg: TrainConfig, images_u8: jax.Array) -> jax.Array:
    """Stored uint8 images -> pixels in [0, 1] with the model's channel count."""
    return unit_range(images_u8, cfg.in_channels)


def _normalized(cfg: TrainConfig, x01: jax.Array) -> jax.Array:
    return InputSpec.named(cfg.normalization, cfg.image_size).normalize(x01)


def loss_of_outputs(
    cfg: TrainConfig, model: DenseNet, logits: jax.Array, targets: jax.Array, pos_weight
) -> jax.Array:
    if cfg.loss == "mse":
        return losses.mse(model.link(logits), targets)
    if cfg.loss == "weighted_bce":
        return losses.weighted_bce(logits, targets, pos_weight)
    return losses.bce(logits, targets)


def training_inputs(cfg: TrainConfig, images_u8: jax.Array, key: jax.Array) -> jax.Array:
    """Stored uint8 images -> the network's inputs for one step: in [0, 1], augmented (one random
    affine map per image, drawn from ``key``) when ``cfg.augment``, then normalised."""
    x = model_inputs(cfg, images_u8)
    if cfg.augment:
        x = augment.random_affine(
            key,
            x,
            crop_scale=cfg.crop_scale,
            rotate_degrees=cfg.rotate_degrees,
            translate=cfg.translate,
        )
    return _normalized(cfg, x)


def make_loss_and_grads(
    cfg: TrainConfig,
    model: DenseNet,
    pos_weight: np.ndarray | None,
    frozen: tuple[str, ...],
) -> Callable[[Any, Any, jax.Array, jax.Array], tuple[tuple[jax.Array, Any], Any]]:
    """``(params, batch_stats, inputs, targets) -> ((loss, new_batch_stats), grads)``: the
    training-mode forward pass (batch statistics) and the gradient of the batch's mean loss."""
    compute_dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
    frozen_until = frozen[-1] if frozen else None
    weight = None if pos_weight is None else jnp.asarray(pos_weight)

    def loss_fn(params, batch_stats, x, targets):
        cast = lambda tree: jax.tree.map(lambda a: a.astype(compute_dtype), tree)
        variables = {"params": cast(params), "batch_stats": batch_stats}
        logits, new_stats = model.apply_train(variables, x.astype(compute_dtype), frozen_until)
        loss = loss_of_outputs(cfg, model, logits.astype(jnp.float32), targets, weight)
        return loss, new_stats

    return jax.value_and_grad(loss_fn, has_aux=True)


def apply_gradients(
    optimizer: optax.GradientTransformation, state: TrainState, grads: Any, new_stats: Any
) -> TrainState:
    """The next training state: one optimiser update and the new BatchNorm statistics."""
    new_stats = jax.tree.map(lambda a, b: a.astype(b.dtype), new_stats, state.batch_stats)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, new_stats, opt_state)


def init_key(cfg: TrainConfig) -> jax.Array:
    """The key of the model's initialisation."""
    return jax.random.fold_in(jax.random.key(cfg.seed), 0)


def step_key(cfg: TrainConfig, step: int) -> jax.Array:
    """The key of training step ``step`` (its augmentation): a function of the seed and the
    step alone, so a resumed run draws what the uninterrupted one drew."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 1), step)


def data_parallel_shardings(devices: Sequence[jax.Device]) -> tuple[NamedSharding, NamedSharding]:
    """How a step is placed on ``devices``: the training state replicated, each batch split
    along its first axis."""
    mesh = Mesh(np.array(devices), ("data",))
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


def make_train_step(
    cfg: TrainConfig,
    model: DenseNet,
    optimizer: optax.GradientTransformation,
    pos_weight: np.ndarray | None,
    frozen: tuple[str, ...],
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """``(state, images_u8, targets, key) -> (next state, loss)``: ``training_inputs``,
    ``make_loss_and_grads`` and ``apply_gradients`` in one function (jit it)."""
    loss_and_grads = make_loss_and_grads(cfg, model, pos_weight, frozen)

    def step(state: TrainState, images_u8, targets, key):
        x = training_inputs(cfg, images_u8, key)
        (loss, new_stats), grads = loss_and_grads(state.params, state.batch_stats, x, targets)
        return apply_gradients(optimizer, state, grads, new_stats), loss

    return step


def make_predict(cfg: TrainConfig, model: DenseNet) -> Callable[[Any, jax.Array], jax.Array]:
    def predict(variables, images_u8):
        x = _normalized(cfg, model_inputs(cfg, images_u8))
        return model.link(model.apply(variables, x))

    return predict


def evaluate(
    cfg: TrainConfig, predict: Callable, variables: Any, split: data.Split, place: Callable
) -> dict[str, float]:
    outputs, targets = [], []
    for images, batch_targets, valid in data.eval_batches(split, cfg.batch_size):
        outputs.append(np.asarray(predict(variables, place(images)))[valid])
        targets.append(batch_targets[valid])
    scores, truth = np.concatenate(outputs), np.concatenate(targets)
    if cfg.task == "regression":
        return metrics.regression_metrics(scores, truth)
    return metrics.classification_metrics(scores, truth, cfg.label_names)


# --------------------------------------------------------------------------- checkpoints


def _host_state(state: TrainState) -> dict[str, Any]:
    return jax.tree.map(np.asarray, state._asdict())


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("stop_after_steps")
    return json.loads(json.dumps(d))  # as it reads back from the checkpoint (tuples -> lists)


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState, meta: dict) -> None:
    host_state = _host_state(state)
    meta = {**meta, "sha256": content_checksum({}, host_state)}
    manager.save(
        int(state.step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(host_state), meta=ocp.args.JsonSave(meta)
        ),
    )
    manager.wait_until_finished()


def restore_checkpoint(
    manager: ocp.CheckpointManager, step: int, like: TrainState, cfg: TrainConfig, directory: Path
) -> TrainState:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like._asdict())
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
    except Exception as err:  # Orbax raises many kinds for damaged files
        raise CorruptCheckpointError(
            f"checkpoint {directory / str(step)} cannot be read ({type(err).__name__}: {err}). "
            "Delete that step folder to resume from the one before."
        ) from err
    meta = dict(restored["meta"])
    if meta.get("config") != _comparable(cfg):
        raise ValueError(
            f"--workdir: {directory} holds checkpoints of another configuration; use a new "
            "workdir (or the config that wrote them)."
        )
    state = TrainState(**restored["state"])
    actual = content_checksum({}, _host_state(state))
    if actual != meta.get("sha256"):
        raise CorruptCheckpointError(
            f"checkpoint {directory / str(step)} is corrupt: its arrays hash to {actual[:16]}..., "
            f"but it was saved as {str(meta.get('sha256'))[:16]}.... Delete that step folder to "
            "resume from the one before."
        )
    return state


# --------------------------------------------------------------------------- the loop


class _Progress:
    """What the evaluations have decided so far (``progress.json``, replaced atomically): how many
    epochs are evaluated and the best validation metric. The checkpoint at an epoch's end is
    written before its evaluation, so a run killed in between evaluates that epoch on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        stored = json.loads(path.read_text()) if path.exists() else {}
        self.evaluated_epochs: int = stored.get("evaluated_epochs", 0)
        self.best: float | None = stored.get("best")

    def save(self) -> None:
        staging = self.path.with_suffix(".tmp")
        staging.write_text(
            json.dumps({"evaluated_epochs": self.evaluated_epochs, "best": self.best})
        )
        os.replace(staging, self.path)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    """Appends a row unless one for the same epoch is there (a re-evaluation after a kill)."""
    if all(int(r["epoch"]) != row["epoch"] for r in read_rows(path)):
        append_row(path, row)


def _better(cfg: TrainConfig, value: float, best: float | None) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if cfg.best_mode == "max" else value < best


def train(cfg: TrainConfig, workdir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Trains, or resumes the run in ``workdir``, and returns where it ended.

    Returns:
      ``{"step", "epochs", "metrics", "best"}``: the step reached, the epochs evaluated, the
      last validation metrics (empty when none ran in this call) and the best metric so far.
    """
    workdir = Path(workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg)
    train_split = data.open_split(cfg, cfg.train_split)
    eval_split = data.open_split(cfg, cfg.eval_split)
    size = train_split.batch(np.array([0]))[0].shape[1]
    if size != cfg.image_size:
        raise ValueError(
            f"image_size: expected the data set's image size; the config says {cfg.image_size}, "
            f"{cfg.dataset}/{cfg.dataset_config} has {size} px images."
        )
    pos_weight = None
    if cfg.loss == "weighted_bce":
        pos_weight = losses.positive_weights(train_split.targets(), cfg.label_names)
    per_epoch = data.steps_per_epoch(len(train_split), cfg.batch_size)
    total_steps = per_epoch * cfg.epochs

    devices = jax.local_devices()
    if cfg.batch_size % len(devices):
        raise ValueError(
            f"batch_size: expected a multiple of the {len(devices)} local devices; "
            f"got {cfg.batch_size}."
        )
    replicated, split = data_parallel_shardings(devices)
    place = functools.partial(jax.device_put, device=split)

    variables = initial_variables(cfg, model, init_key(cfg))
    frozen = frozen_stages(model, cfg.freeze_until)
    optimizer = make_optimizer(cfg, total_steps, variables["params"], frozen)
    state = initial_state(variables, optimizer)
    checkpoints = workdir / "checkpoints"
    manager = ocp.CheckpointManager(
        checkpoints,
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, create=True),
    )
    record = _Progress(workdir / "progress.json")
    latest = manager.latest_step()
    if latest is not None:
        state = restore_checkpoint(manager, latest, state, cfg, checkpoints)
        if progress:
            print(f"resumed from step {latest} in {checkpoints}")
    elif record.path.exists() or (workdir / "metrics.csv").exists():
        raise ValueError(
            f"--workdir: {workdir} holds results of a run but no checkpoint to resume it; "
            "use a new workdir."
        )
    state = jax.device_put(state, replicated)

    step_fn = jax.jit(make_train_step(cfg, model, optimizer, pos_weight, frozen), donate_argnums=0)
    predict = jax.jit(make_predict(cfg, model))
    meta = {"config": _comparable(cfg)}
    step = last_saved = int(state.step)
    epoch_losses: list[jax.Array] = []
    epoch_start = time.perf_counter()
    steps_run = 0
    scores: dict[str, float] = {}

    def finish_epoch(epoch: int) -> dict[str, float]:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        result = evaluate(cfg, predict, variables, eval_split, place)
        if _better(cfg, result[cfg.best_metric], record.best):
            record.best = result[cfg.best_metric]
            save_bundle(workdir / "best_model", export(cfg, model, variables), overwrite=True)
        seconds = time.perf_counter() - epoch_start
        row = {
            "epoch": epoch + 1,
            "step": step,
            # over the steps of this epoch that ran in this process (all, unless resumed)
            "train_loss": round(float(np.mean([float(x) for x in epoch_losses])), 6)
            if epoch_losses
            else math.nan,
            "images_per_s": round(steps_run * cfg.batch_size / seconds, 1)
            if steps_run
            else math.nan,
            **{k: round(v, 6) for k, v in result.items()},
        }
        _append_csv(workdir / "metrics.csv", row)
        record.evaluated_epochs = epoch + 1
        record.save()
        if progress:
            shown = ", ".join(
                f"{k} {row[k]}" for k in ("train_loss", cfg.best_metric, "images_per_s")
            )
            print(f"epoch {epoch + 1}/{cfg.epochs} (step {step}): {shown}")
        return result

    while True:
        epoch, offset = divmod(step, per_epoch)
        if offset == 0 and step > 0 and record.evaluated_epochs < epoch:
            scores = finish_epoch(epoch - 1)
        if step >= total_steps:
            break
        epoch_losses, epoch_start, steps_run = [], time.perf_counter(), 0
        batches = data.train_batches(train_split, cfg.batch_size, cfg.seed, epoch, offset)
        for images, targets in tqdm(
            batches,
            total=per_epoch - offset,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
        ):
            state, loss = step_fn(state, place(images), place(targets), step_key(cfg, step))
            step, steps_run = step + 1, steps_run + 1
            epoch_losses.append(loss)
            stopping = step == cfg.stop_after_steps
            if step % cfg.checkpoint_every_steps == 0 or step % per_epoch == 0 or stopping:
                save_checkpoint(manager, state, meta)
                last_saved = step
            if stopping:  # as if killed right after this checkpoint
                manager.close()
                return {
                    "step": step,
                    "epochs": record.evaluated_epochs,
                    "metrics": scores,
                    "best": record.best,
                }
    if last_saved != step:
        save_checkpoint(manager, state, meta)
    manager.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    save_bundle(workdir / "final_model", export(cfg, model, variables), overwrite=True)
    return {"step": step, "epochs": record.evaluated_epochs, "metrics": scores, "best": record.best}


def export(cfg: TrainConfig, model: DenseNet, variables: Any) -> ModelBundle:
    """The model bundle of trained variables (loadable with ``iba_jax.load_bundle``)."""
    host = jax.tree.map(np.asarray, variables)
    return ModelBundle(
        config=model.config,
        variables=host,
        label_names=cfg.label_names,
        input_spec=InputSpec.named(cfg.normalization, cfg.image_size),
    )
