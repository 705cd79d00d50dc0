"""β calibration: how the model term and β·information compare, across a sweep of β.

IBA minimises ``model loss + β · information``. When β·information starts orders of magnitude
above the model term (a confident classifier's BCE is 1e-6 to 1e-3 nats, the mean capacity
at α₀ = 5 about 5 nats), Adam lowers every α alike, the model is ignored and every map becomes
the same prior picture; when it stays far below, nothing is removed. :func:`beta_sweep` runs
one attribution per β and reports both terms at the first and the last step, how far from
constant the final λ is (its range: below 0.04 every attribution warns, see
:mod:`iba_jax.diagnostics`), and optionally a score of the maps (e.g. their IoU with ground
truth), so that β can be chosen on held-out images. β is traced: the sweep compiles once.
:func:`recommended_beta` applies the rule this project validated (README, "Which β?").
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from iba_jax.attribute import AttributionAux, IBAConfig
from iba_jax.diagnostics import FLAT_LAMBDA, FlatLambdaWarning, lambda_range


class BetaPoint(NamedTuple):
    """One β of a sweep; terms are means over the images, in nats.

    Attributes:
      beta: β.
      model_start, model_end: the model term at the first and the last step.
      information_start, information_end: β · information at the first and the last step.
      lam_mean: mean final λ (1: everything passes, 0: everything replaced by noise).
      lam_spread: mean over images of the 90th minus the 10th percentile of the final λ: how
        much of λ differs (a small region kept or removed leaves it near 0).
      lam_range: mean over images of the range of the final λ's middle 99.8 %
        (:func:`~iba_jax.diagnostics.lambda_range`): below 0.04 the map is flat (nothing
        stands out), and each attribution warns.
      flat_images: how many images' λ range is below that threshold.
      score: ``score(maps)`` when a score was given, else None.
    """

    beta: float
    model_start: float
    model_end: float
    information_start: float
    information_end: float
    lam_mean: float
    lam_spread: float
    lam_range: float
    flat_images: int
    score: float | None


def beta_sweep(
    run: Callable[[IBAConfig], tuple[jax.Array, AttributionAux]],
    betas: Sequence[float],
    config: IBAConfig = IBAConfig(),
    *,
    score: Callable[[jax.Array], float] | None = None,
) -> list[BetaPoint]:
    """Runs ``run(config with β)`` for each β and summarises the optimisation.

    Args:
      run: an attribution taking its ``IBAConfig``, e.g.
        ``lambda c: ij.iba(net, variables, stats, images, targets, config=c, key=key)``; any
        of the IBA family, with any model loss.
      betas: the β values, each > 0.
      config: the other settings.
      score: optional ``maps -> float`` (higher is better), e.g. the mean IoU of the maps
        with ground truth.

    Example:

      >>> import jax
      >>> import iba_jax as ij
      >>> net = ij.DenseNet(ij.densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
      >>> stats = ij.estimate_feature_stats(net, variables, [x], "denseblock3")
      >>> quick = ij.IBAConfig(steps=3, samples=2)
      >>> run = lambda c: ij.iba(net, variables, stats, x, 0, config=c, unroll=False,
      ...                        key=jax.random.key(2))
      >>> points = beta_sweep(run, [0.1, 10.0], quick)
      >>> [p.beta for p in points]
      [0.1, 10.0]
      >>> header = beta_markdown(points).splitlines()[0]
      >>> header.split(" | ")[4:]
      ['λ spread', 'λ range', 'flat images', 'score |']
      >>> recommended_beta(points) in (0.1, 10.0, None)
      True
    """
    points = []
    for beta in betas:
        if not beta > 0:
            raise ValueError(f"betas: expected values > 0; got {beta!r}.")
        with warnings.catch_warnings():  # flat λ is what the table's λ range column shows
            warnings.simplefilter("ignore", FlatLambdaWarning)
            maps, aux = run(dataclasses.replace(config, beta=float(beta)))
        information = float(beta) * np.asarray(aux.information_loss, np.float64)
        model = np.asarray(aux.model_loss, np.float64)
        lam = np.asarray(aux.lam, np.float64).reshape(len(model), -1)
        spread = np.percentile(lam, 90, axis=1) - np.percentile(lam, 10, axis=1)
        ranges = lambda_range(aux.lam)
        points.append(
            BetaPoint(
                beta=float(beta),
                model_start=float(model[:, 0].mean()),
                model_end=float(model[:, -1].mean()),
                information_start=float(information[:, 0].mean()),
                information_end=float(information[:, -1].mean()),
                lam_mean=float(lam.mean()),
                lam_spread=float(spread.mean()),
                lam_range=float(ranges.mean()),
                flat_images=int((ranges < FLAT_LAMBDA).sum()),
                score=None if score is None else float(score(maps)),
            )
        )
    return points


def beta_markdown(points: Sequence[BetaPoint]) -> str:
    """A sweep as a Markdown table, one row per β."""
    rows = [
        "| β | model term (start -> end) | β·information (start -> end) | λ mean | λ spread "
        "| λ range | flat images | score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        rows.append(
            f"| {p.beta:g} | {p.model_start:.3g} -> {p.model_end:.3g} | "
            f"{p.information_start:.3g} -> {p.information_end:.3g} | {p.lam_mean:.3f} | "
            f"{p.lam_spread:.3f} | {p.lam_range:.3f} | {p.flat_images} | "
            f"{'' if p.score is None else f'{p.score:.3f}'} |"
        )
    return "\n".join(rows)


def recommended_beta(points: Sequence[BetaPoint], *, min_spread: float = 0.3) -> float | None:
    """The β to use, from a sweep on held-out images; None when no β qualifies.

    Only a β whose λ is flat in none of the images qualifies (a flat map shows the feature
    statistics, not the model). With scores (``beta_sweep(..., score=...)``, higher is better):
    the qualifying β of the highest score. Without: the largest qualifying β whose λ spread is
    at least ``min_spread``, the most compression that still leaves a map whose values differ
    across the image. On the phantoms the rule without scores chose IBA β = 0.1 and Inverse IBA
    β = 1 on 8 validation images, and on 177 other cases Inverse IBA then marked more of a
    repeated finding's instances, as the paper claims (docs/results.md).

    Example:

      >>> point = lambda beta, spread, flat, score=None: BetaPoint(
      ...     beta, 0.1, 0.1, 1.0, 0.1, 0.5, spread, 0.9, flat, score)
      >>> recommended_beta([point(0.1, 0.8, 0), point(1.0, 0.4, 0), point(10.0, 0.2, 0)])
      1.0
      >>> recommended_beta([point(0.1, 0.8, 0, 0.3), point(1.0, 0.4, 2, 0.5)])  # 1.0 is flat
      0.1
      >>> recommended_beta([point(10.0, 0.01, 8)]) is None
      True
    """
    if not 0 < min_spread < 1:
        raise ValueError(f"min_spread: expected a number in (0, 1); got {min_spread!r}.")
    kept = [p for p in points if p.flat_images == 0]
    scored = [(p.score, p.beta) for p in kept if p.score is not None]
    if kept and len(scored) == len(kept):
        finite = [(score, beta) for score, beta in scored if np.isfinite(score)]
        return max(finite, key=lambda pair: pair[0])[1] if finite else None
    spread = [p.beta for p in kept if p.lam_spread >= min_spread]
    return max(spread) if spread else None
