"""Several processes (jax.distributed on 127.0.0.1) give the one-process results, merged."""

import csv
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
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


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny 64 px classifier with feature statistics, and the mini phantom data set."""
    folder = tmp_path_factory.mktemp("job")
    net = DenseNet(densenet_tiny(num_classes=4, in_channels=1, head="sigmoid"))
    bundle = ModelBundle(
        net.config, net.init(jax.random.key(0), 64), phantoms.FINDINGS, InputSpec.named("none", 64)
    )
    save_bundle(folder / "model", bundle)
    data = ["cxr_phantoms", "--config", "classification_64_mini", "--data-dir", str(folder)]
    assert (
        main(["estimate", "--model", str(folder / "model"), *data, "--layers", "denseblock3"]) == 0
    )
    return folder, data


def commands(folder, data, out, job_arguments):
    evaluate = ["evaluate", "--model", str(folder / "model"), *data, "--out", str(out / "eval")]
    evaluate += ["--methods", "iba,grad_cam", "--limit", "6", "--sensitivity-samples", "2"]
    explain = ["explain", "--model", str(folder / "model"), "--dataset", *data]
    explain += [
        "--limit",
        "5",
        "--method",
        "gradcam",
        "--batch-size",
        "2",
        "--out",
        str(out / "maps"),
    ]
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

    by_key = lambda table: sorted(table, key=lambda r: (int(r["position"]), r["target"]))
    listed = rows(tmp_path / "two" / "maps" / "explanations.csv")
    assert by_key(listed) == by_key(rows(tmp_path / "one" / "maps" / "explanations.csv"))
    assert sorted({int(r["position"]) for r in listed}) == list(range(5))
    for r in listed:
        npy = Path(r["record"]).with_suffix(".npy").name
        np.testing.assert_array_equal(
            np.load(tmp_path / "two" / "maps" / npy), np.load(tmp_path / "one" / "maps" / npy)
        )
    leftovers = list((tmp_path / "two").rglob("*.process-*"))
    assert leftovers == []  # the parts were merged and removed


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
