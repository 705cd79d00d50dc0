"""The bad-input battery: what iba-jax does with each of many bad or unusual inputs, through
the command line and the Python API.

For every case the outcome must be a clear error whose first line names the argument (or the
file), what was expected and what came, without a traceback (the command line shows one only
with ``--debug``); no output is left behind by a refused run; and where one input of several is
bad, the others are still done. ``tests/test_bad_inputs.py`` runs every case under ``make
test``; run this script to print the table (``--write`` also stores it in
``docs/robustness.md``):

    .venv/bin/python benchmarks/bad_inputs.py --write
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image

import iba_jax as ij
from iba_jax import distributed
from iba_jax.cli import main
from iba_jax.data import phantoms, preprocess
from iba_jax.pretrained import pretrained_dir

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dicom_files import write_dicom  # noqa: E402 (the tests' DICOM writer)

MODEL = "phantoms_cls"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a case did: the exit code (the command line) or the exception's type (the API),
    the error's first line, and what a check of the outputs found (None when it held)."""

    code: int | str
    message: str
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: the interface, what is given, a part of the expected message, and how to
    run it in the prepared folder."""

    interface: str  # "cli" or "api"
    given: str
    expected: str
    run: Callable[[Path], Outcome]


# --------------------------------------------------------------------------- running


def cli(*argv: str, out: str | None = None, done: tuple[str, ...] = ()) -> Callable:
    """A command line case: ``argv`` (``{dir}`` is the prepared folder); ``out`` must not
    exist afterwards (nothing left behind), the files ``done`` must (the good inputs)."""

    def run(folder: Path) -> Outcome:
        args = [a.format(dir=folder) for a in argv]
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(args)
            except SystemExit as exit_:  # argparse: its usage line, then the error's
                code = exit_.code
        lines = [line for line in stderr.getvalue().splitlines() if "error:" in line]
        lines += [line for line in stderr.getvalue().splitlines() if line.startswith("failed: ")]
        problem = None
        if "Traceback" in stderr.getvalue():
            problem = "a traceback was printed"
        elif len(lines) != 1:
            problem = f"expected one error line; got {len(lines)}: {stderr.getvalue()[-400:]!r}"
        elif out is not None and Path(out.format(dir=folder)).exists():
            problem = f"{out} was left behind"
        for path in done:
            if not Path(path.format(dir=folder)).exists():
                problem = f"the good input's {path} was not written"
        return Outcome(code, lines[0] if lines else "", problem)

    return run


def api(call: Callable[[Path], object]) -> Callable:
    """A Python API case: ``call(folder)`` must raise an error with a one-line message."""

    def run(folder: Path) -> Outcome:
        try:
            call(folder)
        except Exception as error:  # the battery records every kind
            text = str(error)
            problem = None if text and "\n" not in text.split(":", 1)[0] else "no message"
            return Outcome(type(error).__name__, text.splitlines()[0] if text else "", problem)
        return Outcome("returned", "", "no error was raised")

    return run


# --------------------------------------------------------------------------- the prepared folder


def prepare(folder: Path) -> None:
    """The files the cases use, made once: images good and bad, DICOMs, weights, a model with
    statistics of another model's weights."""
    first = phantoms.generate("classification", 128, 0, "test", 0)
    pixels = preprocess.to_uint8(first.image)
    PIL.Image.fromarray(pixels).save(folder / "good.png")
    (folder / "text.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "folder.png").mkdir()
    os.mkfifo(folder / "pipe.png")
    bomb = io.BytesIO()
    PIL.Image.new("1", (14_000, 14_000)).save(bomb, "PNG")
    (folder / "bomb.png").write_bytes(bomb.getvalue())
    (folder / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    for name, kind in (
        ("ct.dcm", {"modality": "CT"}),
        ("seg.dcm", {"modality": "SEG"}),
        ("palette.dcm", {"photometric": "PALETTE COLOR"}),
        ("frames.dcm", {"frames": 3}),
    ):
        stored = pixels.astype(np.uint16) * 16  # 12-bit values
        frames = kind.pop("frames", None)
        write_dicom(folder / name, np.stack([stored] * frames) if frames else stored, **kind)
    (folder / "file").write_text("")
    (folder / "text.safetensors").write_text("not tensors")
    (folder / "random.pt").write_bytes(bytes(range(7, 200)))
    (folder / "text.npz").write_text("plain text")
    bundle = ij.load_pretrained(MODEL)
    with np.load(ROOT / "tests" / "data" / "densenet_tiny.npz") as fixture:  # torch's tiny DenseNet
        state = {
            k.removeprefix("state_dict/"): fixture[k]
            for k in fixture.files
            if k.startswith("state_dict/")
        }
    state["features.conv0.weight"] = np.where(
        np.arange(state["features.conv0.weight"].size).reshape(state["features.conv0.weight"].shape)
        < 2,
        np.nan,
        state["features.conv0.weight"],
    ).astype(np.float32)
    np.savez(folder / "nan.npz", **state)
    other = jax.tree.map(lambda v: v * 1.01, bundle.variables)
    ij.save_bundle(folder / "other", dataclasses.replace(bundle, variables=other))
    shutil.copytree(pretrained_dir(MODEL) / "stats", folder / "other" / "stats")
    small = ij.ModelBundle(
        bundle.config, bundle.variables, bundle.label_names, ij.InputSpec.named("none", 64)
    )
    ij.save_bundle(folder / "small", small)


# --------------------------------------------------------------------------- the cases


@functools.cache
def _shipped() -> tuple:
    """The shipped classifier, its denseblock3 statistics and two blank 128 px inputs."""
    bundle = ij.load_pretrained(MODEL)
    stats = ij.load_feature_stats(pretrained_dir(MODEL), "denseblock3")
    return bundle.model, bundle.variables, stats, jnp.zeros((2, 128, 128, 1), jnp.float32)


def _iba(**change: object) -> Callable[[Path], object]:
    """ij.iba on the shipped model, two blank images, targets [0, 1], with ``change``."""

    def call(_: Path) -> object:
        net, variables, stats, x = _shipped()
        given = {"stats": stats, "images": x, "targets": [0, 1], "key": jax.random.key(0)}
        given.update(change)
        return ij.iba(
            net, variables, given.pop("stats"), given.pop("images"), given.pop("targets"), **given
        )

    return call


def _attribute(**change: object) -> Callable[[Path], object]:
    """ij.attribute on the shipped model, two blank images, targets [0, 1], with ``change``."""

    def call(_: Path) -> object:
        net, variables, stats, x = _shipped()
        given = {"targets": [0, 1], "model_loss": ij.target_bce, "key": jax.random.key(0)}
        given.update(change)
        return ij.attribute(net, variables, stats, x, given.pop("targets"), **given)

    return call


def _one_channel_z(features: jax.Array, lam: jax.Array, eps: jax.Array) -> jax.Array:
    return ij.iba_bottleneck(features, lam, eps)[..., :1]  # would broadcast over the channels


def _per_channel_information(capacity: jax.Array) -> jax.Array:
    return capacity.mean(axis=(0, 1))  # one value per channel, not one per image


def _per_output_bce(logits: jax.Array, target: jax.Array) -> jax.Array:
    del target
    return jax.nn.softplus(-logits)  # one value per output, not one per sample


def _fractional_class(clean: jax.Array) -> jax.Array:
    return jnp.full(clean.shape[:1], 1.5)


def _regression(*targets: object, **options: object) -> Callable[[Path], object]:
    def call(_: Path) -> object:
        net, variables, stats, x = _shipped()
        return ij.regression_iba(
            net, variables, stats, x, *targets, key=jax.random.key(0), **options
        )

    return call


def _maps(name: str, **options: object) -> Callable[[Path], object]:
    def call(_: Path) -> object:
        net, variables, stats, x = _shipped()
        return ij.attribution_maps(
            name,
            net,
            variables,
            {"denseblock3": stats},
            x,
            [0, 1],
            key=jax.random.key(0),
            **options,
        )

    return call


def _past_the_outputs(logits: jax.Array, target: jax.Array) -> jax.Array:
    del target
    return ij.target_bce(logits, 4)  # the model has 4 outputs: 0..3


def _traced_past_the_outputs(logits: jax.Array, target: jax.Array) -> jax.Array:
    return ij.target_bce(logits, target + 4)  # traced: found when the loss turns NaN


EXPLAIN = ("explain", "{dir}/good.png", "--model", MODEL)
EVALUATE = ("evaluate", "cxr_phantoms", "--data-dir", "{dir}/tfds", "--model", MODEL)


def explain_with(bad: str, out: str) -> tuple[str, ...]:
    """``explain`` of the good image and ``bad`` (files come before the options)."""
    return (
        "explain",
        "{dir}/good.png",
        bad,
        "--model",
        MODEL,
        "--method",
        "gradcam",
        "--target",
        "0",
        "--out",
        out,
    )


OUT = "{dir}/out"


def cases() -> list[Case]:
    net_cases = [
        (
            "uint8 images",
            _iba(images=np.zeros((2, 128, 128, 1), np.uint8)),
            "images: expected floating-point pixels",
        ),
        (
            "int32 images",
            _iba(images=np.zeros((2, 128, 128, 1), np.int32)),
            "images: expected floating-point pixels",
        ),
        (
            "bool images",
            _iba(images=np.zeros((2, 128, 128, 1), bool)),
            "images: expected floating-point pixels",
        ),
        (
            "one image without a batch axis (rank 3)",
            _iba(images=np.zeros((128, 128, 1), np.float32)),
            "images: expected a batch of images of shape (N, H, W, 1)",
        ),
        (
            "a rank-2 image",
            _iba(images=np.zeros((128, 128), np.float32)),
            "images: expected a batch of images",
        ),
        (
            "channels-first images",
            _iba(images=np.zeros((2, 1, 128, 128), np.float32)),
            "It looks channels-first",
        ),
        (
            "images smaller than the network takes",
            _iba(images=np.zeros((2, 8, 8, 1), np.float32)),
            "images: expected height and width >=",
        ),
        (
            "a NaN pixel",
            _iba(images=np.full((2, 128, 128, 1), np.nan, np.float32)),
            "images: expected finite values",
        ),
        (
            "images_per_call = 0",
            _iba(images_per_call=0),
            "images_per_call: expected a positive integer, 'auto' or None",
        ),
        ("unroll = 'yes'", _iba(unroll="yes"), "unroll: expected True or False"),
        ("a target past the outputs", _iba(targets=[0, 4]), "targets: expected an index in [0, 4)"),
        ("a negative target", _iba(targets=[-1, 0]), "targets: expected an index in [0, 4)"),
        ("a fractional target (1.5)", _iba(targets=1.5), "targets: expected integer class indices"),
        ("a boolean target", _iba(targets=True), "targets: expected integer class indices"),
        (
            "one target for two images of three",
            _iba(targets=[0, 1, 2]),
            "targets: expected one target per image (2)",
        ),
        (
            "a custom objective indexing past the outputs",
            _iba(model_loss=_past_the_outputs),
            "target: expected an index in [0, 4)",
        ),
        (
            "an objective whose index is traced past the outputs (NaN loss)",
            _iba(model_loss=_traced_past_the_outputs, unroll=False),
            "model_loss: expected a finite loss; got nan at step 0 of image 0",
        ),
        (
            "a Squared error on output 7 of 4",
            _iba(model_loss=ij.SquaredError(output=7)),
            "output: expected an index in [0, 4)",
        ),
        (
            "statistics of another layer",
            _iba(stats=ij.load_feature_stats(pretrained_dir(MODEL), "denseblock2")),
            "stats: expected statistics of the 'denseblock3'",
        ),
        (
            "statistics that are not FeatureStats",
            _iba(stats={"mean": 0}),
            "stats: expected FeatureStats",
        ),
        ("no key and no noise", _iba(key=None), "key: expected a PRNG key"),
        (
            "noise of the wrong shape",
            _iba(noise=np.zeros((2, 3, 3, 8, 8, 1))),
            "noise: expected standard-normal draws of shape",
        ),
        ("an unknown layer", _iba(layer="block3"), "layer: expected one of"),
        (
            "a bottleneck form whose Z has one channel of many",
            _attribute(bottleneck=_one_channel_z),
            "bottleneck: expected Z of the noise's shape",
        ),
        (
            "an information term with one value per channel",
            _iba(information=_per_channel_information),
            "information: expected a scalar",
        ),
        (
            "a model loss with one value per output, not per sample",
            _iba(model_loss=_per_output_bce),
            "model_loss: expected one loss per sample",
        ),
        (
            "a target transform giving a fractional class index",
            _attribute(targets=_fractional_class),
            "target_transform: the model loss takes class indices",
        ),
        (
            "three keys for two images",
            _iba(key=jax.random.split(jax.random.key(0), 3)),
            "key: expected one key or one key per image (2)",
        ),
    ]
    api_cases = [Case("api", given, expected, api(call)) for given, call, expected in net_cases]
    api_cases += [
        Case(
            "api",
            "β = -1",
            "beta: expected a finite value >= 0",
            api(lambda _: ij.IBAConfig(beta=-1.0)),
        ),
        Case(
            "api",
            "β = NaN",
            "beta: expected a finite value >= 0",
            api(lambda _: ij.IBAConfig(beta=float("nan"))),
        ),
        Case(
            "api",
            "0 optimisation steps",
            "steps: expected a positive integer",
            api(lambda _: ij.IBAConfig(steps=0)),
        ),
        Case("api", "an unknown readout", "readout", api(lambda _: ij.IBAConfig(readout="best"))),
        Case(
            "api",
            "regression loss 'mae'",
            "loss: expected one of",
            api(_regression(1.0, loss="mae")),
        ),
        Case(
            "api",
            "the MSE loss without targets",
            "targets: the 'mse' loss needs a target",
            api(_regression()),
        ),
        Case(
            "api",
            "the RM loss with targets",
            "targets: the 'rm' loss takes no targets",
            api(_regression(3.0, loss="rm")),
        ),
        Case(
            "api",
            "regression of output 5 of 4",
            "output: expected an output index in [0, 4)",
            api(_regression(loss="deviation", output=5)),
        ),
        Case(
            "api",
            "multi-layer IBA with layers out of order",
            "layers: expected distinct layers in network order",
            api(
                lambda _: ij.multilayer_iba(
                    *_shipped()[:2], {}, _shipped()[3], 0, layers=("denseblock3", "denseblock1")
                )
            ),
        ),
        Case("api", "an unknown method name", "method: expected one of", api(_maps("lime"))),
        Case(
            "api",
            "a method without the statistics it needs",
            "stats: multilayer_iba needs the feature statistics of",
            api(_maps("multilayer_iba")),
        ),
        Case(
            "api",
            "a mesh without an 'images' axis",
            "mesh: expected a jax.sharding.Mesh",
            api(_maps("iba", mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",)))),
        ),
        Case(
            "api",
            "statistics recorded for other weights",
            "stats: the 'denseblock3' statistics in",
            api(lambda folder: ij.load_feature_stats(folder / "other", "denseblock3")),
        ),
        Case(
            "api",
            "statistics of a layer not stored",
            "layer: no feature statistics for",
            api(lambda _: ij.load_feature_stats(pretrained_dir(MODEL), "denseblock4")),
        ),
        Case(
            "api",
            "a folder that is no model bundle",
            "model: expected a model bundle directory",
            api(lambda folder: ij.load_bundle(folder)),
        ),
        Case(
            "api",
            "saving over an existing bundle",
            "exists; pass overwrite=True",
            api(lambda folder: ij.save_bundle(folder / "other", ij.load_pretrained(MODEL))),
        ),
        Case(
            "api",
            "normalising 1 channel by 2 means",
            "mean, std: expected 1 or 1 values",
            api(lambda _: preprocess.normalize(np.ones((4, 4, 1)), (0.1, 0.2), (1.0, 1.0))),
        ),
        Case(
            "api",
            "read_image of empty bytes",
            "<bytes>: the file is empty",
            api(lambda _: preprocess.read_image(b"")),
        ),
        Case(
            "api",
            "read_image of a 14,000² PNG (a decompression bomb)",
            "too many pixels",
            api(lambda folder: preprocess.read_image(folder / "bomb.png")),
        ),
        Case(
            "api",
            "a coordinator without a port",
            "coordinator: expected HOST:PORT",
            api(lambda _: distributed.initialize("localhost", 2, 0)),
        ),
        Case(
            "api",
            "a process index past the processes",
            "process_id: expected an index in [0, 2)",
            api(lambda _: distributed.initialize("localhost:1234", 2, 5)),
        ),
    ]
    cli_cases = [
        Case(
            "cli",
            "a text file named .png among good images",
            "not a PNG, JPEG or DICOM image",
            cli(
                *explain_with("{dir}/text.png", OUT),
                done=("{dir}/out/good.Mass.grad_cam.npy",),
            ),
        ),
        Case(
            "cli",
            "an empty file",
            "the file is empty",
            cli(
                *explain_with("{dir}/empty.png", "{dir}/out2"),
                done=("{dir}/out2/good.Mass.grad_cam.npy",),
            ),
        ),
        Case(
            "cli",
            "a named pipe (reading it would block)",
            "got a pipe, device or socket",
            cli(
                *explain_with("{dir}/pipe.png", "{dir}/out3"),
                done=("{dir}/out3/good.Mass.grad_cam.npy",),
            ),
        ),
        Case(
            "cli",
            "/dev/zero (reading it would never end)",
            "got a pipe, device or socket",
            cli(
                *explain_with("/dev/zero", "{dir}/out4"),
                done=("{dir}/out4/good.Mass.grad_cam.npy",),
            ),
        ),
        Case(
            "cli",
            "a folder given as an image",
            "got a folder",
            cli(*explain_with("{dir}/folder.png", "{dir}/out5")),
        ),
        Case(
            "cli",
            "a decompression bomb (14,000² PNG, 200 kB)",
            "too many pixels to decode",
            cli(*explain_with("{dir}/bomb.png", "{dir}/out6")),
        ),
        Case(
            "cli",
            "a missing file",
            "No such file or directory",
            cli(*explain_with("{dir}/nothing.png", "{dir}/out7")),
        ),
        Case(
            "cli",
            "a DICOM of a CT",
            "expected a radiograph (DICOM Modality CR, DX, RG, DR); got Modality CT",
            cli(*explain_with("{dir}/ct.dcm", "{dir}/out8")),
        ),
        Case(
            "cli",
            "a DICOM segmentation (SEG)",
            "got Modality SEG",
            cli(*explain_with("{dir}/seg.dcm", "{dir}/out9")),
        ),
        Case(
            "cli",
            "a palette-colour DICOM",
            "got PALETTE COLOR",
            cli(*explain_with("{dir}/palette.dcm", "{dir}/out10")),
        ),
        Case(
            "cli",
            "a multi-frame DICOM",
            "expected a single-frame image; got 3 frames",
            cli(*explain_with("{dir}/frames.dcm", "{dir}/out11")),
        ),
        Case(
            "cli",
            "a broken DICOM",
            "not a readable DICOM",
            cli(*explain_with("{dir}/fake.dcm", "{dir}/out12")),
        ),
        Case(
            "cli",
            "--target ²",
            "--target: expected positives, an output index below 4",
            cli(*EXPLAIN, "--target", "²", "--out", OUT + "t1", out=OUT + "t1"),
        ),
        Case(
            "cli",
            "--target 4 of 4 outputs",
            "an output index below 4",
            cli(*EXPLAIN, "--target", "4", "--out", OUT + "t2", out=OUT + "t2"),
        ),
        Case(
            "cli",
            "--target Pneumonia (not a label)",
            "one of Mass, Nodule, Effusion",
            cli(*EXPLAIN, "--target", "Pneumonia", "--out", OUT + "t3", out=OUT + "t3"),
        ),
        Case(
            "cli",
            "--method lime",
            "--method: expected one of",
            cli(*EXPLAIN, "--method", "lime", "--out", OUT + "t4", out=OUT + "t4"),
        ),
        Case(
            "cli",
            "--method regression_iba_mse (needs true scores)",
            "needs each image's true score",
            cli(*EXPLAIN, "--method", "regression_iba_mse", "--out", OUT + "t5", out=OUT + "t5"),
        ),
        Case(
            "cli",
            "--model that is neither a folder nor a shipped name",
            "is neither a model bundle folder nor a shipped model",
            cli(
                "explain",
                "{dir}/good.png",
                "--model",
                "phantoms",
                "--out",
                OUT + "t6",
                out=OUT + "t6",
            ),
        ),
        Case(
            "cli",
            "--model with statistics of other weights",
            "were estimated for other weights",
            cli(
                "explain",
                "{dir}/good.png",
                "--model",
                "{dir}/other",
                "--out",
                OUT + "t7",
                out=OUT + "t7",
            ),
        ),
        Case(
            "cli",
            "--out that is a file",
            "out: expected a folder",
            cli(*EXPLAIN, "--out", "{dir}/file"),
        ),
        Case(
            "cli",
            "--out under a file",
            "out: cannot write into",
            cli(*EXPLAIN, "--out", "{dir}/file/under"),
        ),
        Case(
            "cli",
            "explain with neither images nor --dataset",
            "got neither",
            cli("explain", "--model", MODEL, "--out", OUT + "t8", out=OUT + "t8"),
        ),
        Case(
            "cli",
            "explain --dataset without --data-dir",
            "--data-dir: --dataset needs",
            cli("explain", "--dataset", "cxr_phantoms", "--model", MODEL, "--out", OUT + "t9"),
        ),
        Case(
            "cli",
            "the same folder, another method",
            "were computed with other method",
            cli(*EXPLAIN, "--method", "gradients", "--out", OUT),
        ),
        Case(
            "cli",
            "--batch-size 0",
            "argument --batch-size: expected an integer >= 1",
            cli(*EXPLAIN, "--batch-size", "0", "--out", OUT + "n1", out=OUT + "n1"),
        ),
        Case(
            "cli",
            "--batch-size -3",
            "argument --batch-size: expected an integer >= 1",
            cli(*EXPLAIN, "--batch-size", "-3", "--out", OUT + "n2", out=OUT + "n2"),
        ),
        Case(
            "cli",
            "--limit -1",
            "argument --limit: expected an integer >= 1",
            cli(*EXPLAIN, "--limit", "-1", "--out", OUT + "n3", out=OUT + "n3"),
        ),
        Case(
            "cli",
            "--seed -1",
            "argument --seed: expected an integer in [0, 4294967295]",
            cli(*EXPLAIN, "--seed", "-1", "--out", OUT + "n4", out=OUT + "n4"),
        ),
        Case(
            "cli",
            "evaluate --limit 0",
            "argument --limit: expected an integer >= 1",
            cli(*EVALUATE, "--limit", "0", "--out", OUT),
        ),
        Case(
            "cli",
            "evaluate --sensitivity-samples -2",
            "expected an integer >= 0",
            cli(
                *EVALUATE,
                "--sensitivity-samples",
                "-2",
                "--out",
                OUT,
            ),
        ),
        Case(
            "cli",
            "evaluate --cases-per-call 0",
            "expected an integer >= 1",
            cli(*EVALUATE, "--cases-per-call", "0", "--out", OUT),
        ),
        Case(
            "cli",
            "evaluate of two models with one folder name",
            "folders with different names",
            cli(
                *EVALUATE,
                "--model",
                MODEL,
                "--out",
                OUT + "e1",
                out=OUT + "e1",
            ),
        ),
        Case(
            "cli",
            "--num-processes without --coordinator",
            "--coordinator: --num-processes",
            cli(
                *EVALUATE,
                "--num-processes",
                "2",
                "--process-id",
                "0",
                "--out",
                OUT + "e2",
            ),
        ),
        Case(
            "cli",
            "--num-processes 0",
            "argument --num-processes: expected an integer >= 1",
            cli(*EVALUATE, "--num-processes", "0", "--out", OUT),
        ),
        Case(
            "cli",
            "estimate --images 0",
            "argument --images: expected an integer >= 1",
            cli("estimate", "cxr_phantoms", "--model", "{dir}/small", "--images", "0"),
        ),
        Case(
            "cli",
            "estimate into a folder that is no bundle",
            "expected a model bundle directory",
            cli(
                "estimate",
                "cxr_phantoms",
                "--model",
                "{dir}/folder.png",
                "--data-dir",
                "{dir}/tfds",
                "--config",
                "classification_64_mini",
            ),
        ),
        Case(
            "cli",
            "demo --out an existing file",
            "out: expected a folder",
            cli("demo", "--out", "{dir}/file"),
        ),
        Case(
            "cli",
            "demo --images 0",
            "argument --images: expected an integer >= 1",
            cli("demo", "--images", "0", "--out", OUT + "d1", out=OUT + "d1"),
        ),
        Case(
            "cli",
            "build-data of a release without --manual-dir",
            "manual_dir: nih_chest_xray14 is built from its downloaded release; got none",
            cli("build-data", "nih_chest_xray14", "--data-dir", "{dir}/tfds"),
        ),
        Case(
            "cli",
            "build-data with a missing --manual-dir",
            "is not a folder. Request BrixIA",
            cli(
                "build-data", "brixia", "--data-dir", "{dir}/tfds", "--manual-dir", "{dir}/missing"
            ),
        ),
        Case(
            "cli",
            "build-data with an empty --manual-dir",
            "is empty. Download NIH",
            cli(
                "build-data",
                "nih_chest_xray14",
                "--data-dir",
                "{dir}/tfds",
                "--manual-dir",
                "{dir}/folder.png",
            ),
        ),
        Case(
            "cli",
            "build-data with --data-dir a file",
            "data_dir: expected a folder",
            cli("build-data", "cxr_phantoms", "--data-dir", "{dir}/file"),
        ),
        Case(
            "cli",
            "build-data --on-bad-image for generated phantoms",
            "on_bad_image: cxr_phantoms generates its images",
            cli("build-data", "cxr_phantoms", "--data-dir", "{dir}/tfds", "--on-bad-image", "skip"),
        ),
        Case(
            "cli",
            "build-data of an unknown data set",
            "argument dataset: invalid choice",
            cli("build-data", "mnist", "--data-dir", "{dir}/tfds"),
        ),
        Case(
            "cli",
            "convert weights with NaN",
            "tensors with NaN or infinite values",
            cli("convert", "{dir}/nan.npz", "{dir}/c1", out="{dir}/c1"),
        ),
        Case(
            "cli",
            "convert a text file named .safetensors",
            "is not a safetensors file",
            cli("convert", "{dir}/text.safetensors", "{dir}/c2", out="{dir}/c2"),
        ),
        Case(
            "cli",
            "convert random bytes named .pt",
            "is not a torch file",
            cli("convert", "{dir}/random.pt", "{dir}/c3", out="{dir}/c3"),
        ),
        Case(
            "cli",
            "convert a text file named .npz",
            "is not a .npz archive of tensors",
            cli("convert", "{dir}/text.npz", "{dir}/c4", out="{dir}/c4"),
        ),
        Case(
            "cli",
            "convert a file of another suffix",
            "expected a .npz, .safetensors, .pt",
            cli("convert", "{dir}/good.png", "{dir}/c5", out="{dir}/c5"),
        ),
        Case(
            "cli",
            "convert a missing file",
            "expected a weights file",
            cli("convert", "{dir}/none.npz", "{dir}/c6", out="{dir}/c6"),
        ),
        Case(
            "cli",
            "convert --in-channels 2",
            "argument --in-channels: invalid choice: 2",
            cli("convert", "{dir}/nan.npz", "{dir}/c7", "--in-channels", "2", out="{dir}/c7"),
        ),
    ]
    return api_cases + cli_cases


def run_all(folder: Path) -> list[tuple[Case, Outcome]]:
    """Prepares ``folder`` and runs every case in order (some use what earlier ones wrote)."""
    prepare(folder)
    results = []
    for case in cases():
        outcome = case.run(folder)
        message = outcome.message.replace(str(folder.resolve()), "DIR").replace(str(folder), "DIR")
        message = message.replace(str(Path(ij.__file__).parent), "iba_jax")  # where installed
        results.append((case, dataclasses.replace(outcome, message=message)))
    return results


def table(results: list[tuple[Case, Outcome]]) -> str:
    """The Markdown table: input, interface, outcome (exit code or error type), the message."""
    rows = [
        "| # | interface | input | outcome | message (first line) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, (case, outcome) in enumerate(results, 1):
        message = outcome.message.replace("|", "\\|")
        if len(message) > 160:
            message = message[:157] + "..."
        rows.append(f"| {n} | {case.interface} | {case.given} | {outcome.code} | {message} |")
    return "\n".join(rows) + "\n"


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the table in docs/")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results = run_all(Path(folder))
    failed = [(c, o) for c, o in results if o.problem or c.expected not in o.message]
    text = table(results)
    print(text)
    print(f"{len(results)} cases, {len(failed)} not as expected")
    for case, outcome in failed:
        print(f"  {case.given}: {outcome.problem or 'message'}: {outcome.message}")
    print(json.dumps({"cases": len(results), "not_as_expected": len(failed)}))
    if args.write:
        page = ROOT / "docs" / "robustness.md"
        head = page.read_text().split("<!-- table -->")[0]
        page.write_text(head + "<!-- table -->\n" + text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_())
