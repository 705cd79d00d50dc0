"""The estimate, evaluate and explain commands, in one process and in several (jax.distributed
on 127.0.0.1): the same rows, merged, and every report."""

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import PIL.Image
import pytest

from iba_jax import distributed
from iba_jax.bundle import InputSpec, ModelBundle, save_bundle
from iba_jax.cli import main
from iba_jax.data import phantoms
from iba_jax.models import DenseNet, densenet_tiny

ROOT = Path(__file__).parents[1]
# One process runs `iba-jax evaluate` and then `iba-jax explain` (it joins the job once).
BOTH = (
    "import sys\nfrom iba_jax.cli import main\nargs = sys.argv[1:]\ncut = args.index('--then')\n"
    "sys.exit(main(args[:cut]) or main(args[cut + 1 :]))"
)


def rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NET = DenseNet(densenet_tiny(num_classes=4, in_channels=1, head="sigmoid"))


def tiny_bundle(image_size):
    variables = NET.init(jax.random.key(0), 64)
    return ModelBundle(
        NET.config, variables, phantoms.FINDINGS, InputSpec.named("none", image_size)
    )


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Two copies of a tiny 64 px classifier with feature statistics (``iba-jax estimate``),
    and the mini phantom data set."""
    folder = tmp_path_factory.mktemp("job")
    save_bundle(folder / "model", tiny_bundle(64))
    data = ["cxr_phantoms", "--config", "classification_64_mini", "--data-dir", str(folder)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        estimate = ["estimate", "--model", str(folder / "model"), *data, "--layers", "denseblock3"]
        assert main(estimate) == 0
    assert "estimated denseblock3 over 32 images" in printed.getvalue()
    shutil.copytree(folder / "model", folder / "other")
    return folder, data


def test_a_model_of_another_image_size_is_refused(job, tmp_path, capsys):
    _, data = job
    save_bundle(tmp_path / "large", tiny_bundle(128))
    assert main(["estimate", "--model", str(tmp_path / "large"), *data]) == 2
    assert "the model takes 128 px images" in capsys.readouterr().err
    alone = ["--num-processes", "2", "--process-id", "0"]  # no coordinator: refused
    evaluate = ["evaluate", "--model", str(tmp_path / "large"), *data, "--out", str(tmp_path)]
    assert main([*evaluate, *alone]) == 2
    assert "--coordinator: --num-processes and --process-id need" in capsys.readouterr().err
    assert main(["explain", "--model", str(tmp_path / "large"), "--out", str(tmp_path)]) == 2
    assert "expected image files or --dataset (a data set split); got neither" in (
        capsys.readouterr().err
    )


def commands(folder, data, out, job_arguments):
    models = ["--model", str(folder / "model"), "--model", str(folder / "other")]
    evaluate = ["evaluate", *models, *data, "--out", str(out / "eval")]
    # Gradients and the random control: the rows and their merging are the same code for every
    # method (the random maps come from per-image keys, as IBA's noise does); IBA's ten unrolled
    # steps would be compiled once in each of the three processes.
    evaluate += ["--methods", "gradients,random", "--limit", "6", "--sensitivity-samples", "2"]
    explain = ["explain", "--model", str(folder / "model"), "--dataset", *data, "--limit", "5"]
    explain += ["--method", "gradcam", "--batch-size", "2", "--out", str(out / "maps")]
    return [
        sys.executable,
        "-c",
        BOTH,
        *evaluate,
        *job_arguments,
        "--then",
        *explain,
        *job_arguments,
    ]


def test_two_processes_give_the_one_process_results(job, tmp_path):
    folder, data = job
    one = subprocess.run(
        commands(folder, data, tmp_path / "one", []), cwd=ROOT, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    check_reports(tmp_path / "one" / "eval", one.stdout)
    port = free_port()
    started = [
        subprocess.Popen(
            commands(
                folder,
                data,
                tmp_path / "two",
                [
                    "--coordinator",
                    f"127.0.0.1:{port}",
                    "--num-processes",
                    "2",
                    "--process-id",
                    str(i),
                ],
            ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in started]
    for p, (_, err) in zip(started, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "process 1 of 2" in outputs[1][0] and "process 0 merged the rows" in outputs[1][0]

    timeless = lambda table: [{k: v for k, v in r.items() if k != "seconds"} for r in table]
    alone = rows(tmp_path / "one" / "eval" / "results.csv")
    merged = rows(tmp_path / "two" / "eval" / "results.csv")
    assert len(alone) > 4 and timeless(merged) == timeless(alone)  # same rows, same order
    assert (tmp_path / "two" / "eval" / "summary.md").exists()

    by_key = lambda table: sorted(table, key=lambda r: (r["input"], r["target"]))
    listed = rows(tmp_path / "two" / "maps" / "explanations.csv")
    assert by_key(listed) == by_key(rows(tmp_path / "one" / "maps" / "explanations.csv"))
    assert len({r["input"] for r in listed}) == 5
    for r in listed:
        npy = Path(r["record"]).with_suffix(".npy").name
        np.testing.assert_array_equal(
            np.load(tmp_path / "two" / "maps" / npy), np.load(tmp_path / "one" / "maps" / npy)
        )
    leftovers = list((tmp_path / "two").rglob("*.process-*"))
    assert leftovers == []  # the parts were merged and removed


def check_reports(out, printed):
    """Every table and plot of an evaluation of two models (the same weights) with Gradients
    and the random control."""
    assert "| model | gradients |" in printed and (out / "summary.md").read_text() in printed
    summary = rows(out / "summary.csv")
    assert [(r["model"], r["method"]) for r in summary] == [
        ("model", "gradients"),
        ("model", "random"),
        ("other", "gradients"),
        ("other", "random"),
    ]
    same = [r["iou"] for r in summary if r["method"] == "gradients"]
    assert same[0] == same[1]  # the same weights and seeds: the same maps
    assert [r["method"] for r in rows(out / "iou_by_model.csv")] == ["gradients", "random"]
    for name in ("model", "other"):
        assert set(rows(out / f"iou_by_target_{name}.csv")[0]) <= {"method", *phantoms.FINDINGS}
        for plot in ("insertion_deletion", "iou", "sensitivity_n"):
            picture = np.asarray(PIL.Image.open(out / f"{plot}_{name}.png").convert("L"))
            assert picture.shape[0] > 200 and picture.std() > 10  # drawn, not blank
    assert not list(out.glob("pcc*.png"))  # no severity maps here


def test_merging_drops_repeats_and_names_gaps(tmp_path):
    path = tmp_path / "rows.csv"
    key = lambda r: int(r["i"])
    with (tmp_path / "rows.process-0-of-2.csv").open("w") as f:
        f.write("i,v\n0,a\n2,c\n")
    with (tmp_path / "rows.process-1-of-2.csv").open("w") as f:
        f.write("i,v\n1,b\n")
    with pytest.raises(RuntimeError, match=r"rows\.csv: 1 expected rows are in no part file"):
        distributed.merge_records(path, key, range(4), order=key)
    assert not path.exists() and len(distributed.part_files(path)) == 2  # nothing lost
    with (tmp_path / "rows.process-0-of-1.csv").open("w") as f:
        f.write("i,v\n3,d\n1,b\n")  # a row merged twice by a rerun
    distributed.merge_records(path, key, range(4), order=key)
    assert [(r["i"], r["v"]) for r in rows(path)] == [
        ("0", "a"),
        ("1", "b"),
        ("2", "c"),
        ("3", "d"),
    ]
    assert distributed.part_files(path) == []
    assert list(distributed.process_share(5)) == [0, 1, 2, 3, 4]  # one process: everything
    with pytest.raises(ValueError, match="coordinator: expected HOST:PORT"):
        distributed.initialize("localhost", 2, 0)
