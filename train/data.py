"""The training input: a TFDS split read as numpy, in a seeded order per epoch.

Order is a pure function of (seed, epoch), so a run resumed at any step sees exactly the batches
the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from iba_jax.data import building
from train.config import TrainConfig


class Split:
    """Random access to one split's images (uint8 ``(N, H, W, 1)``) and targets (float32);
    ``flips`` (``(N, K)`` booleans), where given, turns those 0/1 labels into their opposite."""

    def __init__(
        self,
        source: Sequence[dict[str, Any]],
        target: str,
        limit: int | None = None,
        flips: np.ndarray | None = None,
    ):
        self.source = source
        self.target = target
        self.size = len(source) if limit is None else min(limit, len(source))
        if self.size == 0:
            raise ValueError("the split is empty: nothing to train or evaluate on.")
        self.flips = flips

    def __len__(self) -> int:
        return self.size

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        examples = [self.source[int(i)] for i in indices]
        images = np.stack([e["image"] for e in examples])
        targets = np.stack([np.atleast_1d(e[self.target]) for e in examples]).astype(np.float32)
        if self.flips is not None:
            targets = np.where(self.flips[indices], 1.0 - targets, targets)
        return images, targets

    def targets(self) -> np.ndarray:
        """Every example's target (reads the whole split once)."""
        return self.batch(np.arange(self.size))[1]


def open_split(cfg: TrainConfig, split: str) -> Split:
    """Builds the data set if needed (offline: phantoms are generated, real sets read from
    ``manual_dir``) and opens one split."""
    data_dir = os.path.expanduser(cfg.data_dir)
    builder = building.build(
        cfg.dataset, config=cfg.dataset_config, data_dir=data_dir, manual_dir=cfg.manual_dir
    )
    source = builder.as_data_source(split=split)
    if split != cfg.train_split:
        return Split(source, cfg.target)
    flips = None
    if cfg.label_noise:
        flips = label_flips(len(source), cfg.num_outputs, cfg.label_noise, cfg.seed)
    return Split(source, cfg.target, cfg.max_train_examples, flips)


def label_flips(size: int, outputs: int, share: float, seed: int) -> np.ndarray:
    """Which labels of each of ``size`` examples a noisy annotator got wrong: each one with
    probability ``share``, by a draw that depends on (seed, example) only, so that a shorter
    split (``max_train_examples``) has the same flips on the examples it keeps."""
    return np.stack(
        [np.random.default_rng([seed, 1, i]).random(outputs) < share for i in range(size)]
    )


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of the training examples for one epoch."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def steps_per_epoch(size: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped so that every step has one shape)."""
    if size < batch_size:
        raise ValueError(
            f"batch_size: expected at most the {size} training examples; got {batch_size}."
        )
    return size // batch_size


def train_batches(
    split: Split, batch_size: int, seed: int, epoch: int, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of one epoch from batch number ``start`` on."""
    order = epoch_order(len(split), seed, epoch)
    for b in range(start, steps_per_epoch(len(split), batch_size)):
        yield split.batch(order[b * batch_size : (b + 1) * batch_size])


def eval_batches(
    split: Split, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every example once, in order; the last batch is padded and comes with a validity mask."""
    for start in range(0, len(split), batch_size):
        indices = np.arange(start, min(start + batch_size, len(split)))
        valid = np.ones(batch_size, bool)
        valid[len(indices) :] = False
        padded = np.concatenate([indices, np.full(batch_size - len(indices), indices[-1])])
        images, targets = split.batch(padded)
        yield images, targets, valid
