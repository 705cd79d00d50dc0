"""The demo: phantom radiographs with known findings, explained by every method, as one page.

``run_demo(out)`` takes the first test phantoms with findings, explains each finding with the
shipped classifier (``phantoms_cls``) by every method, scores each map against the finding's
pixel-exact ground truth (IoU, pointing game, insertion and deletion AUC) and writes
``out/index.html``: a self-contained page (every picture inlined) with the images and their
ground truth, the maps side by side, a table of the mean scores per method and each case's
insertion and deletion curves. The page is rendered by Jinja2 with autoescaping, so no text
from a file name or a label can inject markup.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.metadata
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jinja2
import numpy as np

from iba_jax import report_plots
from iba_jax.bundle import ModelBundle
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8, unit_range
from iba_jax.evaluation import CLASSIFICATION_METHODS, load_stats
from iba_jax.methods import METHODS, MethodSettings, attribution_maps, needed_layers, target_key
from iba_jax.metrics import faithfulness, localisation
from iba_jax.models import predict
from iba_jax.pretrained import load_pretrained, pretrained_dir

# The evaluation's classification methods, less the random map (a control, not an explanation).
DEMO_METHODS = tuple(m for m in CLASSIFICATION_METHODS if m != "random")
MODEL = "phantoms_cls"
COLUMNS = (
    "method",
    "cases",
    "iou",
    "pointing_game",
    "insertion_auc",
    "deletion_auc",
    "total_seconds",
)


@dataclasses.dataclass(frozen=True)
class DemoCase:
    """One finding of one phantom: the image index, the finding and its ground truth."""

    index: int
    target: int
    pixels: np.ndarray  # uint8 (S, S, 1)
    truth: np.ndarray  # bool (S, S)
    boxes: np.ndarray  # (instances, 4): normalised ymin, xmin, ymax, xmax


def demo_cases(images: int, size: int = 128) -> list[DemoCase]:
    """Every finding of the first ``images`` test phantoms that have one."""
    found: list[DemoCase] = []
    index = 0
    while len({c.index for c in found}) < images:
        phantom = phantoms.generate("classification", size, 0, "test", index)
        pixels = to_uint8(phantom.image)[..., None]
        for target in np.nonzero(phantom.labels)[0]:
            masks = [m for f, m in phantom.instances if f == target]
            boxes = np.array([phantoms.box_of(m) for m in masks])
            found.append(DemoCase(index, int(target), pixels, np.any(masks, axis=0), boxes))
        index += 1
    return found


def _png_uri(plot: Callable[..., None], *args: Any, **kwargs: Any) -> str:
    """A ``report_plots`` function's PNG as a data URI (the page carries its pictures)."""
    buffer = io.BytesIO()
    plot(*args, path=buffer, **kwargs)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def run_demo(
    out: str | os.PathLike[str],
    *,
    images: int = 4,
    methods: Sequence[str] = DEMO_METHODS,
    settings: MethodSettings = MethodSettings(),
    seed: int = 0,
    bundle: ModelBundle | None = None,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
) -> Path:
    """Writes the demo page ``out/index.html`` and returns its path.

    ``bundle`` replaces the shipped classifier's weights or label names (it must take the
    128 px phantoms; the feature statistics stay the shipped model's).
    """
    start = time.perf_counter()
    bundle = bundle or load_pretrained(MODEL)
    model, variables = bundle.model, bundle.variables
    stats = load_stats(pretrained_dir(MODEL), needed_layers(methods))
    cases = demo_cases(images, bundle.input_spec.image_size)
    x = bundle.input_spec.normalize(
        unit_range(np.stack([c.pixels for c in cases]), model.in_channels)
    )
    targets = jnp.asarray([c.target for c in cases])
    truth = jnp.asarray(np.stack([c.truth for c in cases]))
    base = jax.random.key(seed)
    keys = jnp.stack([target_key(base, c.index, c.target) for c in cases])
    score = faithfulness.target_score(model, variables, targets)
    probabilities = np.asarray(predict(model, variables, x))
    results: dict[str, dict[str, Any]] = {}
    for method in progress(iter(methods)):
        began = time.perf_counter()
        maps = attribution_maps(
            method, model, variables, stats, x, targets, key=keys, settings=settings
        )
        binary = localisation.binarize_for(maps, truth, "area")
        results[method] = {
            "maps": np.asarray(maps),
            "iou": np.asarray(localisation.iou(binary, truth)),
            "pointing_game": np.asarray(localisation.pointing_game(maps, truth)),
            "curves": faithfulness.insertion_deletion(score, x, maps),
            "seconds": time.perf_counter() - began,
        }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    page.write_text(
        _render(bundle, cases, probabilities, results, settings, time.perf_counter() - start)
    )
    return page


def _table(results: dict[str, dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [
        {
            "method": method,
            "cases": count,
            "iou": f"{r['iou'].mean():.3f}",
            "pointing_game": f"{r['pointing_game'].mean():.2f}",
            "insertion_auc": f"{r['curves'].insertion_auc.mean():.3f}",
            "deletion_auc": f"{r['curves'].deletion_auc.mean():.3f}",
            "total_seconds": f"{r['seconds']:.1f}",
        }
        for method, r in results.items()
    ]


def _render(
    bundle: ModelBundle,
    cases: Sequence[DemoCase],
    probabilities: np.ndarray,
    results: dict[str, dict[str, Any]],
    settings: MethodSettings,
    seconds: float,
) -> str:
    names = bundle.label_names
    rendered_cases = []
    for i, case in enumerate(cases):
        name = names[case.target]
        panels = []
        for method, r in results.items():
            curves = r["curves"]
            panels.append(
                {
                    "method": method,
                    "image": _png_uri(
                        report_plots.overlay,
                        case.pixels,
                        r["maps"][i],
                        METHODS[method].unit,
                        method,
                        outline=case.truth,
                    ),
                    "iou": f"{r['iou'][i]:.2f}",
                    "insertion": f"{curves.insertion_auc[i]:.2f}",
                    "deletion": f"{curves.deletion_auc[i]:.2f}",
                }
            )
        by_method = {
            m: (r["curves"].insertion[i], r["curves"].deletion[i]) for m, r in results.items()
        }
        fraction = next(iter(results.values()))["curves"].fraction
        title = f"{name} (ground truth)"
        rendered_cases.append(
            {
                "title": f"Test phantom {case.index}: {name}",
                "subtitle": "predicted: "
                + ", ".join(f"{n} {p:.2f}" for n, p in zip(names, probabilities[i], strict=True)),
                "image": _png_uri(
                    report_plots.overlay,
                    case.pixels,
                    None,
                    "",
                    title,
                    outline=case.truth,
                    boxes=case.boxes,
                ),
                "panels": panels,
                "curves": _png_uri(report_plots.curves, fraction, by_method, f"p({name})"),
            }
        )
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("iba_jax", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    template = environment.get_template("demo_report.html.j2")
    iba = settings.iba
    return template.render(
        title="iba-jax demo: attribution maps of phantom chest radiographs",
        description=(
            "Synthetic radiographs with pixel-exact ground truth (cxr_phantoms); each finding of "
            "each image is explained by every method, and each map is scored against the "
            "finding's pixels."
        ),
        model_name=MODEL,
        settings=(
            f"IBA after denseblock3, β = {iba.beta}, {iba.steps} steps × {iba.samples} samples"
        ),
        seconds=f"{seconds:.0f}",
        device=", ".join(str(d) for d in jax.devices()),
        version=importlib.metadata.version("iba-jax"),
        jax_version=jax.__version__,
        columns=COLUMNS,
        table=_table(results, len(cases)),
        cases=rendered_cases,
    )
