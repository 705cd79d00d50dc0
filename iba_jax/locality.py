"""Layer locality: can maps at a layer point at regions at all?

IBA and its variants read a map off the grid of one layer. A map can only localise what that
layer keeps local: if every cell of the layer sees (and carries) the whole image, replacing the
cells under a finding by noise leaves the prediction where it was, and no bottleneck placed
there can single the finding out. :func:`layer_locality` measures this directly, per candidate
layer, on images with a known region (a finding's ground truth, the lungs for a severity
score): the share of the evidence removed when the cells under the region are replaced by the
prior noise of IBA's bottleneck, ε ~ N(μ_R, σ_R), against the share removed when the cells
outside it are. Beside it, the layer's grid and receptive field.

The evidence of one image is the distance between its clean output and the output with every
cell replaced (the prediction IBA's noise alone gives):
``removed = Σ s·(clean − noised) / Σ s·(clean − all noised)`` over the images, with
``s = sign(clean − all noised)``, so that a regressor whose noise prediction lies above an
image's score counts the other way. The outputs are the network's last layer before its head
(logits; a regressor's score).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from iba_jax import checks
from iba_jax.bottleneck import noise_from_standard_normal, standard_normal
from iba_jax.inputs import check_images, check_layer_stack, check_stats_shape, per_image_keys
from iba_jax.models.protocol import Model, Variables
from iba_jax.objectives import check_output_index
from iba_jax.sharding import pad_images
from iba_jax.stats import FeatureStats


class LayerLocality(NamedTuple):
    """How local one layer is on the given images and regions.

    Attributes:
      layer: the layer's name.
      grid: its output's height and width.
      receptive_field: the side, in input pixels, of what one cell sees (theoretical); None
        for a model that does not say (no ``receptive_field`` method).
      inside_share: mean fraction of the grid's cells under the regions.
      evidence: mean |clean output − output with every cell noised| over the images, in
        output units: the shares below are fractions of it, and mean little where it is small.
      removed_inside: share of the evidence removed by noising the cells under the regions
        (1: all of it; a local layer).
      removed_outside: the same for the cells outside the regions (0 for a local layer).
      local: ``removed_inside >= min_removed`` and exceeds ``removed_outside`` by at least
        ``min_gap``: maps at this layer can point at the regions.
    """

    layer: str
    grid: tuple[int, int]
    receptive_field: int | None
    inside_share: float
    evidence: float
    removed_inside: float
    removed_outside: float
    local: bool


class LocalityReport(NamedTuple):
    """Every candidate layer, in network order, and the deepest local one (None if none is)."""

    layers: tuple[LayerLocality, ...]
    recommended: str | None


def cells_under(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``(N, h, w)`` booleans: the cells of a ``grid`` over ``(N, H, W)`` masks that contain at
    least one masked pixel (cell i covers rows ⌊i·H/h⌋ to ⌈(i+1)·H/h⌉, likewise columns)."""
    masks = np.asarray(masks, bool)
    height, width = masks.shape[1:]
    rows = [(i * height // grid[0], -(-(i + 1) * height // grid[0])) for i in range(grid[0])]
    cols = [(j * width // grid[1], -(-(j + 1) * width // grid[1])) for j in range(grid[1])]
    return np.stack(
        [
            np.stack([masks[:, r0:r1, c0:c1].any(axis=(1, 2)) for c0, c1 in cols], axis=-1)
            for r0, r1 in rows
        ],
        axis=1,
    )


@functools.partial(jax.jit, static_argnames=("model", "layer", "samples"))
def _outputs_with_noised_cells(
    model: Model,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    inside: jax.Array,
    targets: jax.Array,
    keys: jax.Array,
    min_std: jax.Array,
    *,
    layer: str,
    samples: int,
) -> jax.Array:
    """``(N, 4)``: per image the target output clean, with the cells inside noised, with the
    cells outside noised and with every cell noised (the last three averaged over samples)."""
    features = model.encode(variables, images, layer)
    std = jnp.maximum(stats.std, min_std)

    def one(h: jax.Array, cells: jax.Array, target: jax.Array, key: jax.Array) -> jax.Array:
        draws = standard_normal(key, (samples, *h.shape))
        eps = noise_from_standard_normal(draws, stats.mean[None], std[None])
        eps = jnp.where(stats.active[None], eps, h[None])  # never active: kept as they are
        cells, h = cells[None, ..., None], h[None]
        output = lambda z: model.decode(variables, z, layer)[:, target]
        return jnp.stack(
            [
                output(h)[0],
                output(jnp.where(cells, eps, h)).mean(),
                output(jnp.where(cells, h, eps)).mean(),
                output(eps).mean(),
            ]
        )

    return jax.vmap(one)(features, inside, targets, keys)


def _removed_shares(outputs: np.ndarray) -> tuple[float, float, float]:
    """The mean evidence and the shares of it removed inside and outside (module docstring)."""
    clean, inside, outside, everything = np.asarray(outputs, np.float64).T
    sign = np.sign(clean - everything)
    evidence = float(np.sum(sign * (clean - everything)))
    if evidence <= 0:
        raise ValueError(
            "images: the noise removes no evidence at this layer (every image's output is the "
            "same with all its cells replaced); locality cannot be measured on these images."
        )
    return (
        evidence / len(clean),
        float(np.sum(sign * (clean - inside)) / evidence),
        float(np.sum(sign * (clean - outside)) / evidence),
    )


def layer_locality(
    model: Model,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: ArrayLike,
    masks: ArrayLike,
    targets: ArrayLike = 0,
    *,
    layers: Sequence[str] | None = None,
    key: jax.Array,
    samples: int = 8,
    min_std: float = 0.01,
    min_removed: float = 0.5,
    min_gap: float = 0.25,
    images_per_call: int = 16,
) -> LocalityReport:
    """Measures, per layer, how much of the evidence lies under given regions (module doc).

    Args:
      stats: ``{layer: FeatureStats}``; the candidate layers need theirs.
      images: ``(N, H, W, C)`` model inputs.
      masks: ``(N, H, W)`` booleans, each image's region (a finding's ground truth, the lungs).
      targets: the output whose evidence is measured: one index, or one per image.
      layers: the candidates (default: every layer of ``stats``), in network order.
      key: PRNG key of the noise (one per image is split off).
      samples: noise draws per image and replacement.
      min_std: the std floor of the noise, as IBA's ``IBAConfig.min_std``.
      min_removed, min_gap: when a layer counts as local (see :class:`LayerLocality`).
      images_per_call: images per compiled call (each holds ``3 * samples + 1`` copies of the
        layer's features through the rest of the network).

    Returns:
      a :class:`LocalityReport`; ``recommended`` is the deepest local layer.

    Example (a tiny untrained network; the shipped phantom models are real cases):

      >>> import jax, numpy as np
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
      >>> stats = estimate_feature_stats(net, variables, [x], ("denseblock1", "denseblock3"))
      >>> masks = np.zeros((4, 64, 64), bool)
      >>> masks[:, 8:24, 8:24] = True
      >>> report = layer_locality(net, variables, stats, x, masks, 0, key=jax.random.key(2))
      >>> [(r.layer, r.grid, r.receptive_field) for r in report.layers]
      [('denseblock1', (16, 16), 27), ('denseblock3', (4, 4), 135)]
    """
    checks.check_positive_int("samples", samples)
    checks.check_positive_int("images_per_call", images_per_call)
    if not min_std >= 0:
        raise ValueError(f"min_std: expected a number >= 0; got {min_std!r}.")
    if layers is None:
        layers = sorted(stats, key=lambda name: model.layer_names.index(name))
    layers = check_layer_stack(model, layers, stats)
    check_images(model, images)
    images = jnp.asarray(images)
    masks = np.asarray(masks)
    if masks.shape != images.shape[:3]:
        raise ValueError(
            f"masks: expected one (H, W) region per image, shape {images.shape[:3]}; got "
            f"{masks.shape}."
        )
    if masks.dtype != bool:
        raise ValueError(f"masks: expected booleans; got {masks.dtype}.")
    empty = np.flatnonzero(~masks.any(axis=(1, 2)))
    if empty.size:
        raise ValueError(
            f"masks: expected a region in every image; images {empty.tolist()} have none."
        )
    count = images.shape[0]
    targets = np.broadcast_to(np.asarray(targets), (count,))
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets: expected output indices (integers); got {targets.dtype}.")
    check_output_index("targets", targets, model.num_outputs)
    keys = per_image_keys(key, count)
    found = []
    for i, layer in enumerate(layers):
        encode = functools.partial(model.encode, variables, layer=layer)
        shape = jax.eval_shape(encode, images[:1]).shape[1:]
        check_stats_shape(layer, stats[layer], shape)
        grid = (shape[0], shape[1])
        inside = cells_under(masks, grid)
        layer_keys = jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
        per_image = pad_images(  # one shape for every call: one compilation
            (images, jnp.asarray(inside), jnp.asarray(targets, jnp.int32), layer_keys),
            min(images_per_call, count),
        )
        measured = np.concatenate(
            [
                _outputs_with_noised_cells(
                    model,
                    variables,
                    stats[layer],
                    *(a[start : start + images_per_call] for a in per_image),
                    jnp.float32(min_std),
                    layer=layer,
                    samples=samples,
                )
                for start in range(0, count, images_per_call)
            ]
        )[:count]
        evidence, removed_inside, removed_outside = _removed_shares(measured)
        found.append(
            LayerLocality(
                layer=layer,
                grid=grid,
                receptive_field=(
                    model.receptive_field(layer) if hasattr(model, "receptive_field") else None
                ),
                inside_share=float(inside.mean()),
                evidence=evidence,
                removed_inside=removed_inside,
                removed_outside=removed_outside,
                local=removed_inside >= min_removed and removed_inside - removed_outside >= min_gap,
            )
        )
    local = [r.layer for r in found if r.local]
    return LocalityReport(tuple(found), local[-1] if local else None)


def locality_markdown(report: LocalityReport) -> str:
    """The report as a Markdown table, one row per layer."""
    rows = [
        "| layer | grid | receptive field (px) | cells inside | evidence | removed inside "
        "| removed outside | local |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.layers:
        rows.append(
            f"| {r.layer} | {r.grid[0]}x{r.grid[1]} | {r.receptive_field or '–'} | "
            f"{r.inside_share:.1%} | {r.evidence:.3g} | {r.removed_inside:.1%} | "
            f"{r.removed_outside:.1%} | {'yes' if r.local else 'no'} |"
        )
    return "\n".join(rows)
