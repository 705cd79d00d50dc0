"""Deterministic, patient-wise splits: no patient's images on both sides of a split."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def split_patients(
    patients: Iterable[str],
    fractions: Mapping[str, float],
    *,
    seed: int,
    forced: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assigns every patient to one split, at random but reproducibly.

    The distinct patients are sorted, shuffled by ``numpy.random.default_rng(seed)`` and cut in
    the order of ``fractions`` (rounded cumulatively, so the counts add up), so the result depends
    only on the set of patients, the fractions and the seed: not on row order or platform.

    Args:
      patients: patient ids (repeats are fine: one per image, say).
      fractions: split name -> share of the patients, summing to 1.
      seed: the shuffle's seed.
      forced: patient -> split for patients that must go to a given split (they are left out of
        the shuffle; the fractions apply to the rest).

    Returns:
      patient id -> split name.

    >>> split = split_patients(["a", "b", "c", "d"], {"train": 0.5, "test": 0.5}, seed=0)
    >>> sorted(split.values())
    ['test', 'test', 'train', 'train']
    """
    names: Sequence[str] = tuple(fractions)
    shares = np.array([fractions[n] for n in names], np.float64)
    if not names or np.any(shares < 0) or not np.isclose(shares.sum(), 1.0):
        raise ValueError(
            f"fractions: expected non-negative shares summing to 1; got {dict(fractions)}."
        )
    forced = dict(forced or {})
    unknown = set(forced.values()) - set(names)
    if unknown:
        raise ValueError(f"forced: expected splits among {list(names)}; got {sorted(unknown)}.")
    free = sorted(set(patients) - set(forced))
    order = np.random.default_rng(seed).permutation(len(free))
    cuts = np.round(np.cumsum(shares) * len(free)).astype(int)
    starts = np.concatenate([[0], cuts[:-1]])
    assignment = dict(forced)
    for name, start, stop in zip(names, starts, cuts, strict=True):
        for i in order[start:stop]:
            assignment[free[i]] = name
    return assignment
