"""The ``iba-jax`` command.

Subcommands:
  convert     PyTorch DenseNet or ResNet weights (.npz, .safetensors, .pt/.pth) -> model bundle
  explain     explain image files (PNG, JPEG, DICOM): maps, overlays and JSON records
  demo        phantom radiographs explained by every method, as an HTML report
  build-data  build a data set (NIH ChestX-ray14, BrixIA, cxr_phantoms) with TFDS
  estimate    feature statistics over a data set, stored in a model bundle (for IBA)
  evaluate    attribution methods on a data set split: per-image results and a summary
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from iba_jax import checks, demo, distributed, evaluation, explain, methods, sharding
from iba_jax.attribute import IBAConfig, iba, inverse_iba, regression_iba
from iba_jax.bundle import (
    InputSpec,
    ModelBundle,
    StatsOfAnotherModelError,
    load_bundle,
    save_bundle,
    save_feature_stats,
)
from iba_jax.calibration import beta_markdown, beta_sweep, recommended_beta
from iba_jax.data import building
from iba_jax.data.preprocess import NORMALIZATIONS, UnreadableImageError, read_image, unit_range
from iba_jax.labels import LABEL_SETS, parse_label_names
from iba_jax.locality import layer_locality, locality_markdown
from iba_jax.methods import MethodSettings
from iba_jax.metrics import correlation, localisation
from iba_jax.models.densenet import HEADS
from iba_jax.models.families import ARCHITECTURES
from iba_jax.models.protocol import Model, predict, standard_layers
from iba_jax.models.torch_import import infer_config, load_state_dict, variables_from_state_dict
from iba_jax.pretrained import PRETRAINED, model_dir
from iba_jax.records import read_rows, writable_folder, write_rows
from iba_jax.segmentation import load_segmenter, segment_lungs
from iba_jax.stats import FeatureStats, estimate_feature_stats


def _convert(args: argparse.Namespace) -> None:
    state_dict = load_state_dict(args.weights)
    config = None
    if args.arch is not None:  # check against the named architecture instead of trusting shapes
        config = ARCHITECTURES[args.arch](
            num_classes=infer_config(state_dict).num_classes,
            in_channels=args.in_channels,
            head=args.head,
        )
    variables, config = variables_from_state_dict(state_dict, config, head=args.head)
    bundle = ModelBundle(
        config=config,
        variables=variables,
        label_names=parse_label_names(args.labels, config.num_classes),
        input_spec=InputSpec.named(args.normalization, args.image_size),
    )
    checksum = save_bundle(args.out, bundle, overwrite=args.overwrite)
    print(f"read {len(state_dict)} tensors from {args.weights}")
    print(f"model: {config}")
    print(f"wrote the model bundle {args.out} (sha256 {checksum[:16]}...)")


def _demo(args: argparse.Namespace) -> None:
    writable_folder(args.out)
    print(
        f"explaining {args.images} phantom test images with every method (devices: "
        f"{', '.join(str(d) for d in jax.devices())})"
    )
    _compiling("the model and each method")
    page = demo.run_demo(
        args.out,
        images=args.images,
        methods=demo.DEMO_METHODS,
        seed=args.seed,
        progress=functools.partial(tqdm, desc="methods", total=len(demo.DEMO_METHODS)),
    )
    print(f"the demo report: {page.resolve()}")


def _build_data(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    builder = building.build(
        args.dataset,
        data_dir=args.data_dir,
        config=args.config,
        manual_dir=args.manual_dir,
        on_bad_image=args.on_bad_image,
        masks_dir=args.masks_dir,
        progress=True,
    )
    sizes = ", ".join(f"{name} {split.num_examples}" for name, split in builder.info.splits.items())
    print(f"built {builder.data_dir} in {time.perf_counter() - start:.1f} s: {sizes}")
    skipped = builder.info.metadata.get("skipped_images", {})
    for name, reason in skipped.items():
        print(f"  skipped {name}: {reason}")
    if skipped:
        print(f"{len(skipped)} image(s) skipped (listed above and in the data set's metadata)")


def _model_inputs_of(bundle: ModelBundle, images: np.ndarray) -> jax.Array:
    return bundle.input_spec.normalize(unit_range(images, bundle.config.in_channels))


def _check_image_size(bundle: ModelBundle, source: building.DataSource, name: str) -> None:
    size = source[0]["image"].shape[0]
    if size != bundle.input_spec.image_size:
        raise ValueError(
            f"--config: the model takes {bundle.input_spec.image_size} px images; {name} has "
            f"{size} px images (choose the config of that size)."
        )


def _split_of(args: argparse.Namespace) -> building.DataSource:
    """The data set split of a command (built first if needed, by process 0 of a job)."""
    if jax.process_index() == 0:
        building.build(
            args.dataset, config=args.config, data_dir=args.data_dir, manual_dir=args.manual_dir
        )
    distributed.barrier(f"build {args.dataset} {args.config}")
    return building.data_source(
        args.dataset, args.split, config=args.config, data_dir=args.data_dir
    )


def _bundle_and_split(args: argparse.Namespace) -> tuple[ModelBundle, building.DataSource]:
    """The model bundle and the data set split (built first if needed) of a command."""
    bundle = load_bundle(args.model)
    source = _split_of(args)
    _check_image_size(bundle, source, f"{args.dataset}/{args.config}")
    return bundle, source


def _estimate(args: argparse.Namespace) -> None:
    bundle, source = _bundle_and_split(args)
    layers = _layers_of(args, bundle.model)
    count = min(args.images, len(source))
    batches = (
        _model_inputs_of(bundle, batch["image"])
        for batch in building.numpy_batches(source, args.batch_size, keys=("image",))
    )
    start = time.perf_counter()
    stats = estimate_feature_stats(
        bundle.model, bundle.variables, tqdm(batches, desc="estimate"), layers, max_samples=count
    )
    description = f"{args.dataset}/{args.config} split {args.split}, first {count} images"
    for layer, layer_stats in cast(dict[str, FeatureStats], stats).items():
        save_feature_stats(args.model, layer, layer_stats, description=description)
    print(
        f"estimated {', '.join(layers)} over {count} images in {time.perf_counter() - start:.1f} s"
        f"; stored in {args.model}/stats/"
    )


def _model_and_split(args: argparse.Namespace) -> tuple[Path, ModelBundle, building.DataSource]:
    """The model's folder (a shipped name resolved), its bundle and the data set split."""
    folder = model_dir(args.model)
    bundle = load_bundle(folder)
    source = _split_of(args)
    _check_image_size(bundle, source, f"{args.dataset}/{args.config}")
    return folder, bundle, source


class _GroundTruth(NamedTuple):
    """The cases with ground truth of the first images of a split."""

    count: int  # type: ignore[assignment]  # images read (a field named as tuple.count)
    cases: list[evaluation.Case]
    images: jax.Array  # the cases' images, as model inputs


def _ground_truth_of(
    bundle: ModelBundle, source: building.DataSource, limit: int | None
) -> _GroundTruth:
    count = min(limit or len(source), len(source))
    cases, pixels = [], []
    for index in range(count):
        example = source[index]  # read once: its cases and, for each, its image
        for case in evaluation.cases(example, index, bundle.label_names):
            cases.append(case)
            pixels.append(example["image"])
    if not cases:
        raise ValueError(
            f"--limit: the {count} image(s) hold no region to measure (no positive label with "
            "ground truth, no scored lung zone); use more images."
        )
    return _GroundTruth(count, cases, _model_inputs_of(bundle, np.stack(pixels)))


def _beta_sweep(args: argparse.Namespace) -> None:
    folder, bundle, source = _model_and_split(args)
    layer = _layer_of(args, bundle.model)
    allow_other = args.allow_other_model_stats
    stats = evaluation.load_stats(folder, (layer,), allow_other_model=allow_other)[layer]
    found = _ground_truth_of(bundle, source, args.limit)
    targets = np.array([case.target for case in found.cases])
    key = jax.random.key(args.seed)
    if args.method.startswith("regression_iba_"):
        loss = args.method.removeprefix("regression_iba_")
        labels = np.array([case.label for case in found.cases]) if loss == "mse" else None
        run = lambda c: regression_iba(
            bundle.model,
            bundle.variables,
            stats,
            found.images,
            labels,
            loss=loss,
            config=c,
            layer=layer,
            key=key,
        )
    else:
        method = iba if args.method == "iba" else inverse_iba
        run = lambda c: method(
            bundle.model,
            bundle.variables,
            stats,
            found.images,
            targets,
            config=c,
            layer=layer,
            key=key,
        )
    score = _sweep_score(args, found)
    _compiling(args.method)
    points = beta_sweep(run, args.betas, score=score)
    print(beta_markdown(points))
    best = recommended_beta(points)
    print(
        f"{len(found.cases)} cases in {found.count} images of {args.dataset}/{args.config} split "
        f"{args.split}, {args.method} at {layer}; score: {_SCORES[args.score]}; "
        + (
            f"recommended β = {best:g} (the best score among the βs whose λ is flat in no image)"
            if best is not None
            else "no β recommended: λ is flat in some image at every β (try smaller β)"
        )
    )


_SCORES = {
    "iou": "mean IoU with the ground truth (maps binarised to its area)",
    "pcc": "mean Pearson correlation with the severity map",
}


def _sweep_score(args: argparse.Namespace, found: _GroundTruth) -> Callable[[jax.Array], float]:
    """The sweep's score of the maps: IoU with the ground truth or PCC with the severity map."""
    if args.score == "iou":
        truth = jnp.asarray(np.stack([case.truth for case in found.cases]))
        return lambda maps: float(
            localisation.iou(localisation.binarize_for(maps, truth), truth).mean()
        )
    if any(case.severity is None for case in found.cases):
        raise ValueError(
            f"--score pcc: expected a data set with severity maps (BrixIA-like regression); "
            f"got {args.dataset}/{args.config}."
        )
    severity = jnp.asarray(np.stack([cast(np.ndarray, case.severity) for case in found.cases]))
    return lambda maps: float(np.nanmean(correlation.pearson(maps, severity)))


def _layer_locality(args: argparse.Namespace) -> None:
    folder, bundle, source = _model_and_split(args)
    layers = _layers_of(args, bundle.model)
    stats = evaluation.load_stats(folder, layers, allow_other_model=args.allow_other_model_stats)
    found = _ground_truth_of(bundle, source, args.limit)
    _compiling("the model from each layer")
    report = layer_locality(
        bundle.model,
        bundle.variables,
        stats,
        found.images,
        np.stack([case.truth for case in found.cases]),
        np.array([case.target for case in found.cases]),
        layers=layers,
        key=jax.random.key(args.seed),
        samples=args.samples,
    )
    print(locality_markdown(report))
    print(
        f"{len(found.cases)} regions in {found.count} images of {args.dataset}/{args.config} "
        f"split {args.split}; "
        + (
            f"recommended layer: {report.recommended} (the deepest local one)"
            if report.recommended
            else "no candidate layer is local: maps there cannot point at these regions"
        )
    )


def _join_job(args: argparse.Namespace) -> None:
    """Joins a multi-process job when asked (``--coordinator``, or ``--distributed`` to let JAX
    detect it), and says which share of the work this process has."""
    alone = args.coordinator is None and not args.distributed
    if alone and (args.num_processes is not None or args.process_id is not None):
        raise ValueError(
            "--coordinator: --num-processes and --process-id need the coordinator's HOST:PORT "
            "(or --distributed); without it every process would do all the work."
        )
    if not alone:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        print(
            f"process {jax.process_index()} of {jax.process_count()}: "
            f"{jax.local_device_count()} local device(s), {jax.device_count()} in the job"
        )


def _local_mesh_if_several() -> Mesh | None:
    """All local devices as a mesh when there are several; None for one."""
    return sharding.local_mesh() if jax.local_device_count() > 1 else None


def _evaluate(args: argparse.Namespace) -> None:
    models = [model_dir(m) for m in args.model]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"--model: expected folders with different names; got {args.model}.")
    _join_job(args)
    out = writable_folder(args.out)
    source = _split_of(args)
    results = out / "results.csv"
    start = time.perf_counter()
    _compiling("each model and method")
    for folder, name in zip(models, names, strict=True):
        bundle = load_bundle(folder)
        _check_image_size(bundle, source, f"{args.dataset}/{args.config}")
        settings = _method_settings(args, bundle.model)
        if args.methods is None:
            regression = bundle.config.head == "relu"
            chosen = (
                evaluation.REGRESSION_METHODS if regression else evaluation.CLASSIFICATION_METHODS
            )
        else:
            chosen = tuple(m.strip() for m in args.methods.split(","))
        config = evaluation.EvaluationConfig(
            methods=chosen,
            limit=args.limit,
            seed=args.seed,
            baseline=args.baseline,
            iou_rule=args.iou_rule,
            sensitivity_samples=args.sensitivity_samples,
            cases_per_call=args.cases_per_call or jax.local_device_count(),
            settings=settings,
        )
        stats = evaluation.load_stats(
            folder,
            methods.needed_layers(chosen, settings),
            allow_other_model=args.allow_other_model_stats,
        )
        count = min(args.limit or len(source), len(source))
        evaluation.evaluate(
            bundle,
            source,
            results,
            config,
            stats,
            model_name=name,
            progress=functools.partial(
                tqdm, total=len(distributed.process_share(count)), desc=name
            ),
            mesh=_local_mesh_if_several(),
        )
    if jax.process_index() != 0:
        print(f"process {jax.process_index()}: done; process 0 merged the rows into {results}")
        return
    if not read_rows(results):
        raise ValueError(
            f"--limit: the {args.limit or len(source)} image(s) evaluated hold no case (no "
            "positive label with ground truth); evaluate more images."
        )
    print(evaluation.write_report(results, out))
    print(
        f"results: {results}; summary.md, CSV tables and plots in {out} "
        f"({time.perf_counter() - start:.1f} s)"
    )


def _predict(args: argparse.Namespace) -> int:
    bundle = load_bundle(model_dir(args.model))
    clash = {"file", "sha256"} & set(bundle.label_names)
    if clash:
        raise ValueError(
            f"model: its output names {sorted(clash)} clash with the table's own columns "
            "(file, sha256); rename them in the bundle."
        )
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"out: expected a CSV file to write; {out} is a folder.")
    writable_folder(out.parent, name="out")
    read, failed = [], 0
    for path in args.images:
        try:
            identity, pixels = explain.load_file(bundle, path)
        except (FileNotFoundError, UnreadableImageError) as err:
            print(f"iba-jax predict: error: {err}", file=sys.stderr)
            failed += 1
            continue
        read.append((path, identity.rsplit("#sha256=", 1)[1], pixels))
    rows = []
    for start in range(0, len(read), args.batch_size):
        chunk = read[start : start + args.batch_size]
        x = _model_inputs_of(bundle, np.stack([pixels for _, _, pixels in chunk]))
        outputs = np.asarray(predict(bundle.model, bundle.variables, x))
        for (path, digest, _), values in zip(chunk, outputs, strict=True):
            named = dict(zip(bundle.label_names, map(float, values), strict=True))
            rows.append({"file": path, "sha256": digest, **named})
    if rows:
        write_rows(out, rows)
        print(f"{len(rows)} image(s) -> {out} (columns: {', '.join(bundle.label_names)})")
    return 1 if failed else 0


def _segment_lungs(args: argparse.Namespace) -> int:
    stems = [Path(path).stem for path in args.images]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise ValueError(
            f"images: expected files with distinct names (each mask is written as STEM.png); "
            f"got {', '.join(twice)} more than once."
        )
    segmenter = load_segmenter(args.segmenter)
    out = writable_folder(args.out)
    failed = 0
    for path, stem in zip(args.images, stems, strict=True):
        try:
            pixels = read_image(path)
        except (FileNotFoundError, UnreadableImageError) as err:
            print(f"iba-jax segment-lungs: error: {err}", file=sys.stderr)
            failed += 1
            continue
        (mask,) = segment_lungs([pixels], segmenter)
        building.png(mask * 255).save(out / f"{stem}.png")
        print(f"{path} -> {out / stem}.png ({mask.mean():.1%} lung)")
    return 1 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.dataset):
        raise ValueError(
            "images: expected image files or --dataset (a data set split); got "
            + ("both." if args.images else "neither.")
        )
    model = model_dir(args.model)
    bundle = load_bundle(model)
    method = explain.method_name(args.method)
    explain.check_target(bundle, args.target)
    settings = _method_settings(args, bundle.model)
    stats = evaluation.load_stats(
        model,
        methods.METHODS[method].layers(settings),
        allow_other_model=args.allow_other_model_stats,
    )
    writable_folder(args.out)
    _join_job(args)
    if args.images:
        inputs = explain.file_inputs(bundle, args.images)
    elif args.data_dir is None:
        raise ValueError("--data-dir: --dataset needs the folder where TFDS keeps it; got none.")
    else:
        source = _split_of(args)
        _check_image_size(bundle, source, f"{args.dataset}/{args.config}")
        origin = f"{args.dataset}/{args.config or 'default'}"
        inputs = explain.dataset_inputs(source, args.split, origin)[: args.limit]
    start = time.perf_counter()
    mine = len(distributed.process_share(len(inputs)))
    _compiling(f"the model and {method}")
    result = explain.explain(
        inputs,
        bundle,
        stats,
        method,
        args.target,
        args.out,
        seed=args.seed,
        batch_size=args.batch_size,
        settings=settings,
        model_dir=str(model),
        progress=functools.partial(
            tqdm, desc="images", total=-(-mine // args.batch_size), unit="batch"
        ),
        mesh=_local_mesh_if_several(),
    )
    for origin, reason in result.failed:  # a reader's reason usually names the file already
        print(f"failed: {reason if origin in reason else f'{origin}: {reason}'}", file=sys.stderr)
    earlier = f", {result.already_done} already there" if result.already_done else ""
    print(
        f"explained {mine - len(result.failed)} of {mine} image(s) "
        f"({len(result.written)} map(s){earlier}) with {method} into {args.out} in "
        f"{time.perf_counter() - start:.1f} s; list: {Path(args.out) / explain.INDEX}"
    )
    return 1 if result.failed else 0


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], or the one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}; got {text!r}")
        return value

    return parse


def _betas(text: str) -> list[float]:
    """An argparse type: comma-separated β values, each > 0, or the one-line usage error."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(v > 0 and np.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers > 0; got {text!r}")
    return values


def _beta(text: str) -> float:
    """An argparse type: one β > 0."""
    values = _betas(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one number > 0; got {text!r}")
    return values[0]


def _method_beta(text: str) -> tuple[str, float]:
    """An argparse type: METHOD=β."""
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected METHOD=β, e.g. inverse_iba=30; got {text!r}")
    if name.strip() not in methods.BETA_METHODS:
        known = ", ".join(methods.BETA_METHODS)
        raise argparse.ArgumentTypeError(f"expected METHOD from {known}; got {name!r}")
    return name.strip(), _beta(value)


MODEL_HELP = (
    "a model bundle folder with feature statistics, or a shipped model's name: "
    + ", ".join(PRETRAINED)
)
COUNT = _integer(1)  # how many of something: at least one
SEED = _integer(0, 2**32 - 1)  # a PRNG seed (jax.random.key takes 32 bits here)


_LAYERS_HELP = (
    "comma-separated layer names (default: the model's standard multi-layer ones, "
    "DenseNet's denseblock1-3, a ResNet's layer1-3)"
)


def _subcommand(sub: Any, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group(
        "several processes (jax.distributed; each takes every P-th image; the output folder "
        "must be shared)"
    )
    job.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    job.add_argument("--num-processes", type=COUNT, default=None, help="processes in the job")
    job.add_argument("--process-id", type=_integer(0), default=None, help="this process's index")
    job.add_argument(
        "--distributed",
        action="store_true",
        help="join a job whose settings JAX detects (Cloud TPU, SLURM, Open MPI, Kubernetes)",
    )


def _add_bottleneck_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "the IBA family's bottleneck (defaults: the paper's; choose with layer-locality and "
        "beta-sweep)"
    )
    group.add_argument(
        "--layer",
        default=None,
        help="the bottleneck layer of iba, inverse_iba and regression_iba_* (default: the "
        "model's standard one, DenseNet's denseblock3, a ResNet's layer3; multilayer_iba and "
        "grad_cam run at the model's standard layers: denseblock1-3 and norm5, layer1-3 and "
        "layer4)",
    )
    group.add_argument("--beta", type=_beta, default=IBAConfig().beta, help="β of every method")
    group.add_argument(
        "--method-beta",
        type=_method_beta,
        action="append",
        default=[],
        metavar="METHOD=β",
        help="β of one method over --beta; repeatable (the reference code's Inverse IBA: "
        "inverse_iba=30)",
    )


def _method_settings(args: argparse.Namespace, model: Model) -> MethodSettings:
    """The methods' settings from the bottleneck arguments, at the model's standard layers."""
    return MethodSettings.for_model(
        model,
        iba_layer=_layer_of(args, model),
        iba=dataclasses.replace(IBAConfig(), beta=args.beta),
        betas=tuple(args.method_beta),
    )


def _layer_of(args: argparse.Namespace, model: Model) -> str:
    """The layer of ``--layer`` (default: the model's standard bottleneck layer)."""
    return standard_layers(model, "--layer").bottleneck if args.layer is None else args.layer


def _layers_of(args: argparse.Namespace, model: Model) -> tuple[str, ...]:
    """The layers of ``--layers`` (default: the model's standard multi-layer ones)."""
    if args.layers is None:
        return standard_layers(model, "--layers").multilayer
    layers = tuple(name.strip() for name in args.layers.split(","))
    checks.check_names("--layers", layers, model.layer_names)
    return layers


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=sorted(building.BUILDER_MODULES))
    parser.add_argument("--config", default=None, help="builder config (default: the first)")
    parser.add_argument("--data-dir", required=True, help="where TFDS keeps built data sets")
    parser.add_argument("--manual-dir", default=None, help="the downloaded release (NIH, BrixIA)")


def _add_other_stats_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-other-model-stats",
        action="store_true",
        help="use feature statistics recorded for other weights (shared on purpose)",
    )


def _add_ground_truth_arguments(parser: argparse.ArgumentParser) -> None:
    """A model with statistics and the images with ground truth of a data set split."""
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    _add_other_stats_argument(parser)
    _add_data_arguments(parser)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--limit", type=COUNT, default=None, help="only the first N images")
    parser.add_argument("--seed", type=SEED, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iba-jax",
        description="Explain chest X-ray models with Information Bottleneck Attribution (IBA), "
        "its variants and the baselines; evaluate them on data sets; convert PyTorch weights.",
        epilog="Each command's --help shows examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"iba-jax {importlib.metadata.version('iba-jax')}"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show an error's traceback, not only its line"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    convert = _subcommand(
        sub,
        "convert",
        "convert PyTorch DenseNet or ResNet weights to a model bundle directory",
        "examples:\n"
        "  iba-jax convert densenet121-a639ec97.pth models/imagenet121\n"
        "  iba-jax convert chexnet.pth models/chexnet --head sigmoid --labels nih14\n"
        "  iba-jax convert xrv-all.safetensors models/xrv --normalization xrv --labels xrv18\n"
        "  iba-jax convert resnet50-11ad3fa6.pth models/imagenet-resnet50\n"
        "  iba-jax convert xrv-resnet50.npz models/xrv-resnet50 --normalization xrv "
        "--image-size 512 --head sigmoid --labels xrv18",
    )
    convert.add_argument("weights", help="a .npz, .safetensors or .pt/.pth state dict")
    convert.add_argument("out", help="the model bundle directory to write")
    convert.add_argument(
        "--head",
        choices=HEADS,
        default="linear",
        help="what follows the classifier: linear (torchvision), sigmoid "
        "(CheXNet, torchxrayvision), relu (BrixIA regression)",
    )
    convert.add_argument(
        "--labels",
        default=None,
        help=f"label names: a named set ({', '.join(LABEL_SETS)}), @FILE with "
        "one per line, or a comma-separated list",
    )
    convert.add_argument(
        "--normalization",
        choices=sorted(NORMALIZATIONS),
        default="imagenet",
        help="input normalisation of pixels in [0, 1]",
    )
    convert.add_argument("--image-size", type=COUNT, default=224)
    convert.add_argument(
        "--arch",
        choices=sorted(ARCHITECTURES),
        default=None,
        help="check the weights against this architecture instead of inferring it",
    )
    convert.add_argument(
        "--in-channels",
        type=int,
        choices=(1, 3),
        default=3,
        help="input channels expected with --arch",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    convert.set_defaults(func=_convert)

    demo_parser = _subcommand(
        sub,
        "demo",
        "explain phantom radiographs with every method into an HTML report",
        "example:\n  iba-jax demo --out demo_report\nThen open demo_report/index.html.",
    )
    demo_parser.add_argument("--out", default="demo_report", help="the report's folder")
    demo_parser.add_argument(
        "--images", type=COUNT, default=4, help="phantom test images with findings"
    )
    demo_parser.add_argument("--seed", type=SEED, default=0)
    demo_parser.set_defaults(func=_demo)

    explaining = _subcommand(
        sub,
        "explain",
        "explain image files (PNG, JPEG, DICOM) or a data set split with one method",
        "examples:\n"
        "  iba-jax explain scan.dcm --model MODEL --method iba --target positives --out out/\n"
        "  iba-jax explain a.png b.png --model MODEL --method inverse --target Effusion --out out/"
        "\n  iba-jax explain --dataset cxr_phantoms --config classification_128 --data-dir "
        "~/tfds --split test --model MODEL --out out/\n"
        "Two processes (run each; add hosts the same way):\n"
        "  iba-jax explain --dataset ... --out shared/out --coordinator host0:1234 "
        "--num-processes 2 --process-id 0\n"
        "Per image and target: STEM.TARGET.METHOD.npy, .png (overlay) and .json, listed in "
        "explanations.csv; run again after a kill: finished maps are skipped. The exit "
        "code is 1 when a file could not be read (the others are still explained).",
    )
    explaining.add_argument("images", nargs="*", help="PNG, JPEG or DICOM files")
    dataset = explaining.add_argument_group("or a data set split")
    dataset.add_argument("--dataset", choices=sorted(building.BUILDER_MODULES), default=None)
    dataset.add_argument("--config", default=None, help="builder config (default: the first)")
    dataset.add_argument("--data-dir", default=None, help="where TFDS keeps built data sets")
    dataset.add_argument("--split", default="test")
    dataset.add_argument("--limit", type=COUNT, default=None, help="only the first N images")
    explaining.add_argument("--model", required=True, help=MODEL_HELP)
    _add_other_stats_argument(explaining)
    explaining.add_argument(
        "--method",
        default="iba",
        help="iba, inverse, multilayer, regression, gradcam, ig, lrp, gradients (or a full "
        "name from iba_jax.methods)",
    )
    explaining.add_argument(
        "--target",
        default=explain.POSITIVES,
        help="an output's name or index, or positives (each output >= 0.5; the highest if none)",
    )
    explaining.add_argument("--out", required=True, help="the folder to write into")
    explaining.add_argument("--batch-size", type=COUNT, default=8, help="images per device call")
    explaining.add_argument("--seed", type=SEED, default=0)
    _add_bottleneck_arguments(explaining)
    _add_job_arguments(explaining)
    explaining.set_defaults(func=_explain, manual_dir=None)

    predicting = _subcommand(
        sub,
        "predict",
        "write a model's outputs for image files (PNG, JPEG, DICOM) into a CSV file",
        "example:\n  iba-jax predict a.png b.dcm --model phantoms_reg --out preds.csv\n"
        "Columns: file, sha256 (of the file's bytes), then one per output (the model's head "
        "applied: probabilities, scores). Files are read and preprocessed as `explain` reads "
        "them. The exit code is 1 when a file could not be read (the others are predicted).",
    )
    predicting.add_argument("images", nargs="+", help="PNG, JPEG or DICOM files")
    predicting.add_argument("--model", required=True, help=MODEL_HELP)
    predicting.add_argument("--out", required=True, help="the CSV file to write")
    predicting.add_argument("--batch-size", type=COUNT, default=16, help="images per call")
    predicting.set_defaults(func=_predict)

    lungs = _subcommand(
        sub,
        "segment-lungs",
        "write a lung mask for each radiograph (PNG, JPEG, DICOM): STEM.png, 0 or 255, at the "
        "image's own size",
        "example:\n  iba-jax segment-lungs scan.png other.dcm --out masks/\n"
        "The exit code is 1 when a file could not be read (the others are still segmented).",
    )
    lungs.add_argument("images", nargs="+", help="PNG, JPEG or DICOM files")
    lungs.add_argument("--out", required=True, help="the folder to write the masks into")
    lungs.add_argument(
        "--segmenter", default=None, help="a segmenter folder (default: the shipped one)"
    )
    lungs.set_defaults(func=_segment_lungs)

    data = _subcommand(
        sub,
        "build-data",
        "build a data set with TFDS (offline: from --manual-dir for the real ones)",
        "examples:\n"
        "  iba-jax build-data cxr_phantoms --config classification_64 --data-dir ~/tfds\n"
        "  iba-jax build-data nih_chest_xray14 --config 224 --manual-dir ~/NIH --data-dir ~/tfds\n"
        "  iba-jax build-data brixia --manual-dir ~/brixia --data-dir ~/tfds --on-bad-image skip",
    )
    _add_data_arguments(data)
    data.add_argument(
        "--on-bad-image",
        choices=building.BAD_IMAGE_POLICIES,
        default="fail",
        help="stop at a missing/unreadable image (fail, the default) or skip and list it",
    )
    data.add_argument(
        "--masks-dir",
        default=None,
        help="brixia_public: the folder of the lung masks (default: lung_masks/ in --manual-dir)",
    )
    data.set_defaults(func=_build_data)

    estimate = _subcommand(
        sub,
        "estimate",
        "estimate feature statistics (for IBA) over a data set into a model bundle",
        "example:\n  iba-jax estimate --model runs/nih/best_model nih_chest_xray14 "
        "--config 224 --data-dir ~/tfds --layers denseblock1,denseblock2,denseblock3",
    )
    estimate.add_argument("--model", required=True, help="the model bundle to add them to")
    _add_data_arguments(estimate)
    estimate.add_argument("--split", default="train")
    estimate.add_argument("--layers", default=None, help=_LAYERS_HELP)
    estimate.add_argument("--images", type=COUNT, default=2000, help="images to use at most")
    estimate.add_argument("--batch-size", type=COUNT, default=32)
    estimate.set_defaults(func=_estimate)

    sweep = _subcommand(
        sub,
        "beta-sweep",
        "run an IBA method for several β on a data set split: the model term against "
        "β·information, λ's range and the maps' score (IoU or PCC), per β, and the β to use",
        "example:\n  iba-jax beta-sweep --model phantoms_cls cxr_phantoms --config "
        "classification_128 --data-dir ~/tfds --method iba --betas 0.01,0.1,1,10 --limit 100",
    )
    _add_ground_truth_arguments(sweep)
    sweep.add_argument("--method", choices=methods.BOTTLENECK_METHODS, default="iba")
    sweep.add_argument("--betas", type=_betas, default="0.01,0.1,1,10,30")
    sweep.add_argument(
        "--layer", default=None, help="default: the model's standard bottleneck layer"
    )
    sweep.add_argument(
        "--score",
        choices=tuple(_SCORES),
        default="iou",
        help="how the maps are scored: IoU with the ground truth, or Pearson correlation with "
        "the severity map (severity data sets)",
    )
    sweep.set_defaults(func=_beta_sweep)

    locality = _subcommand(
        sub,
        "layer-locality",
        "measure which layers keep the evidence where the ground truth is (where maps can "
        "localise): noise under the regions vs outside them",
        "example:\n  iba-jax layer-locality --model phantoms_cls cxr_phantoms --config "
        "classification_128 --data-dir ~/tfds --limit 100",
    )
    _add_ground_truth_arguments(locality)
    locality.add_argument("--layers", default=None, help=_LAYERS_HELP)
    locality.add_argument("--samples", type=COUNT, default=8, help="noise draws per image")
    locality.set_defaults(func=_layer_locality)

    evaluate = _subcommand(
        sub,
        "evaluate",
        "evaluate attribution methods on a data set split (resumable)",
        "example:\n  iba-jax evaluate --model DIR cxr_phantoms --config "
        "classification_128 --data-dir ~/tfds --out eval/ --limit 50\n"
        "Run the same command again after a kill: finished rows are kept and skipped.\n"
        "Two models in one report (Table 3):\n  iba-jax evaluate --model bce/ --model "
        "weighted/ cxr_phantoms --config classification_128 --out eval/\n"
        "Two processes on two hosts (run each; the --out folder must be shared):\n"
        "  iba-jax evaluate ... --out shared/eval --coordinator host0:1234 --num-processes 2 "
        "--process-id 0   (and --process-id 1 on the other)",
    )
    evaluate.add_argument(
        "--model",
        required=True,
        action="append",
        help=MODEL_HELP + "; repeat to compare models (named by folder)",
    )
    _add_other_stats_argument(evaluate)
    _add_data_arguments(evaluate)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, from {', '.join(methods.METHODS)} (default: the "
        "classification or the regression set, by the model's head)",
    )
    evaluate.add_argument("--limit", type=COUNT, default=None, help="only the first N images")
    evaluate.add_argument(
        "--baseline",
        choices=("blur", "zero"),
        default="blur",
        help="what replaces removed pixels in insertion/deletion and Sensitivity-N",
    )
    evaluate.add_argument(
        "--iou-rule",
        choices=localisation.RULES,
        default="area",
        help="how maps are binarised for IoU: area (as many pixels as the ground truth; the "
        "tables' default), l2, percentile or otsu",
    )
    evaluate.add_argument(
        "--sensitivity-samples",
        type=_integer(0),
        default=32,
        help="random subsets per size of Sensitivity-N (0 skips it)",
    )
    evaluate.add_argument("--seed", type=SEED, default=0)
    evaluate.add_argument(
        "--cases-per-call",
        type=COUNT,
        default=None,
        help="cases whose maps one call computes, split across the local devices (default: "
        "the number of local devices)",
    )
    evaluate.add_argument("--out", required=True, help="folder for results.csv and summary.md")
    _add_bottleneck_arguments(evaluate)
    _add_job_arguments(evaluate)
    evaluate.set_defaults(func=_evaluate)
    return parser


def compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for the command line and returns its folder.

    Compiling a model and a method takes most of a first run on a CPU; the cache keeps the
    compiled programs, so later runs with the same model, method and sizes start at once. The
    folder is ``$IBA_JAX_CACHE_DIR`` (empty: no cache), else ``$XDG_CACHE_HOME/iba-jax/jax`` or
    ``~/.cache/iba-jax/jax``; a cache set up for JAX itself (``JAX_COMPILATION_CACHE_DIR``) is
    left as it is.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iba-jax" / "jax"
    folder = os.environ.get("IBA_JAX_CACHE_DIR", str(default))
    if not folder:
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def _compiling(what: str) -> None:
    """Says, before the first compilation, why the first batch is slow."""
    cache = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]  # a flag
    where = f"kept in {cache} for later runs" if cache else "no cache: IBA_JAX_CACHE_DIR is empty"
    print(f"compiling {what} on the first batch (first run only; {where})", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    compilation_cache()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, args.command)
            code = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        if args.debug:
            raise
        print(f"iba-jax {args.command}: error: {in_command_terms(err)}", file=sys.stderr)
        return 2
    return code or 0


# The library's errors name the argument of a function ("target: expected ..."); here, the
# option that sets it. Only names that mean the same in every subcommand.
_OPTION_OF = {"method": "--method", "target": "--target", "bundle_dir": "--model"}


def in_command_terms(err: Exception) -> str:
    """A library error as a command-line user reads it: the option instead of the argument,
    and the command that makes what is missing."""
    message = str(err)
    name, colon, rest = message.partition(": ")
    if colon and name in _OPTION_OF:
        message = f"{_OPTION_OF[name]}: {rest}"
    if isinstance(err, building.NotBuiltError):
        message += (
            f" Run `iba-jax build-data {err.name} --config {err.config} --data-dir "
            f"{err.data_dir}` first."
        )
    elif isinstance(err, evaluation.MissingStatsError):
        message += (
            f" Run `iba-jax estimate --model {err.bundle_dir} DATASET --config CONFIG "
            f"--layers {','.join(err.missing)}`."
        )
    elif isinstance(err, StatsOfAnotherModelError):
        message += " (On purpose? --allow-other-model-stats.)"
    elif isinstance(err, FileExistsError):
        message += " (--overwrite replaces it.)"
    return message


def _show_warning(command: str, message: Warning | str, *_: Any, **__: Any) -> None:
    """A warning as one line on stderr, as the errors are (not Python's file and line)."""
    print(f"\niba-jax {command}: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
