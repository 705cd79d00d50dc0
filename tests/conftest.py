"""Shared test setup: strict numerics and the torch reference fixtures in tests/data/."""

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Compilation is most of this suite's time: the programs are small and run for milliseconds.
# Two XLA:CPU settings compile them much faster and change no operation, only the machine code
# (how it is scheduled, vectorised and fused into loops), which the tolerances already allow for
# (tests/README.md):
# - LLVM's optimisation level 0 (the whole suite 540 s -> 355 s on 2 cores, 2026-12-01);
# - the elemental loop emitter instead of the MLIR fusion emitters (test_methods.py 52 s -> 33 s;
#   the whole suite's CPU time 1,101 s -> 763 s, both suites side by side, 2026-12-02). XLA is
#   retiring that emitter (openxla/xla#48001) and aborts at start on a flag it does not know,
#   so the flag is added only when a child process has started JAX's CPU backend with it.
# Set before JAX starts; the pytest-xdist workers, notebook kernels and child processes inherit
# them. Naming the level in XLA_FLAGS runs the suite without either, e.g.
# XLA_FLAGS=--xla_backend_optimization_level=2 for the settings the library runs under.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    given = os.environ.get("XLA_FLAGS", "")
    fast = ["--xla_backend_optimization_level=0"]
    emitter = "--xla_cpu_use_fusion_emitters=false"
    started = subprocess.run(  # whether JAX's CPU backend starts with the flag
        [sys.executable, "-c", "import jax; jax.devices('cpu')"],
        env={**os.environ, "XLA_FLAGS": " ".join([given, *fast, emitter]).strip()},
        capture_output=True,
    )
    if started.returncode == 0:
        fast.append(emitter)
    os.environ["XLA_FLAGS"] = " ".join([given, *fast]).strip()

# Full float32 matmuls/convolutions (the tolerances below assume them), and no silent rank
# promotion (a classic source of wrong broadcasting). Set in the environment, so that the
# subprocesses and notebook kernels the tests start run under the same settings: JAX keys its
# persistent cache on them, and a program a test compiled is then found by a subprocess.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
# One persistent compilation cache for the whole run: the pytest-xdist workers, the notebook
# kernels and the subprocesses (they inherit the environment) compile each program once
# instead of once per process. Every program, however small, is kept: most of the suite's
# programs compile in well under a second, and both workers need many of the same ones.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "iba-jax-test-compilation-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # after the environment above
import numpy as np
import pytest

assert jax.config.jax_default_matmul_precision == os.environ["JAX_DEFAULT_MATMUL_PRECISION"]
assert jax.config.jax_compilation_cache_dir == os.environ["JAX_COMPILATION_CACHE_DIR"]

DATA = Path(__file__).parent / "data"
# BrixIA's public images, annotations and masks (never copied into the repository): beside the
# checkout, or where IBA_JAX_BRIXIA_PUBLIC says; tests that need them skip without them.
BRIXIA_PUBLIC = Path(
    os.environ.get("IBA_JAX_BRIXIA_PUBLIC", Path(__file__).parents[2] / "shared/data/brixia_public")
)
needs_brixia_public = pytest.mark.skipif(
    not (BRIXIA_PUBLIC / "public-annotations.csv").is_file(),
    reason=f"the real BrixIA public folder is not at {BRIXIA_PUBLIC} (set IBA_JAX_BRIXIA_PUBLIC)",
)


def with_devices(count: int) -> dict[str, str]:
    """This process's environment for a child process with ``count`` CPU devices; XLA flags
    already set (e.g. ones that change the kernels, to probe the tolerances) are kept."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
    return {**os.environ, "XLA_FLAGS": flags.strip()}


def load_fixture(name: str) -> dict[str, np.ndarray]:
    """Every array of a tests/data archive, read eagerly."""
    with np.load(DATA / name) as archive:
        return {k: archive[k] for k in archive.files}


def seeded_densenet121_state_dict(archive: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rebuilds the state dict of densenet121_seeded.npz from the numpy recipe it stores
    (its ``recipe`` array; the fixtures' README section 2)."""
    draws = {
        "conv_weight": lambda rng, s: rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:])),
        "linear_weight": lambda rng, s: rng.standard_normal(s) * np.sqrt(1.0 / s[1]),
        "linear_bias": lambda rng, s: np.zeros(s),
        "bn_weight": lambda rng, s: 1.0 + 0.1 * rng.standard_normal(s),
        "bn_bias": lambda rng, s: 0.1 * rng.standard_normal(s),
        "bn_running_mean": lambda rng, s: 0.1 * rng.standard_normal(s),
        "bn_running_var": lambda rng, s: 1.0 + 0.5 * rng.random(s),
    }
    state_dict = {}
    for i, (key, kind) in enumerate(zip(archive["keys"], archive["kinds"], strict=True)):
        shape = tuple(int(n) for n in archive["shapes"][i, : archive["ndims"][i]])
        rng = np.random.default_rng([20261125, i])
        state_dict[str(key)] = draws[str(kind)](rng, shape).astype(np.float32)
    return state_dict


@pytest.fixture(scope="session", autouse=True)
def temporary_files_under_basetemp(tmp_path_factory):
    """Python's temporary folder, for this process, inside pytest's own (which pytest prunes):
    TFDS leaves an empty folder in the temporary folder for every data set it builds."""
    folder = tmp_path_factory.getbasetemp() / "tempfile"
    folder.mkdir(exist_ok=True)
    before, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield
    tempfile.tempdir = before


@pytest.fixture(scope="session")
def tiny_reference():
    return load_fixture("densenet_tiny.npz")


@pytest.fixture(scope="session")
def tiny_state_dict(tiny_reference):
    prefix = "state_dict/"
    return {k.removeprefix(prefix): v for k, v in tiny_reference.items() if k.startswith(prefix)}


@pytest.fixture(scope="session")
def seeded_reference():
    return load_fixture("densenet121_seeded.npz")


@pytest.fixture(scope="session")
def seeded_state_dict(seeded_reference):
    return seeded_densenet121_state_dict(seeded_reference)


def channels_last(a):
    """NCHW (or any (..., C, H, W)) torch layout -> (..., H, W, C)."""
    a = np.asarray(a)
    return np.moveaxis(a, -3, -1)


@pytest.fixture(scope="session")
def iba_reference():
    return load_fixture("iba_reference.npz")


@pytest.fixture(scope="session")
def tiny_model(tiny_state_dict):
    """The tiny torchvision DenseNet of the fixtures, as (DenseNet, variables)."""
    from iba_jax.models import DenseNet
    from iba_jax.models.torch_import import variables_from_state_dict

    variables, config = variables_from_state_dict(tiny_state_dict)
    return DenseNet(config), variables


@pytest.fixture(scope="session")
def reference_stats(iba_reference):
    """The reference estimator's denseblock3 statistics, as FeatureStats (channels last)."""
    from iba_jax.stats import FeatureStats

    return FeatureStats(
        mean=channels_last(iba_reference["estimator/mean"]),
        std=channels_last(iba_reference["estimator/std"]),
        active=channels_last(iba_reference["estimator/active"]),
        count=np.int32(iba_reference["estimator/n_samples"]),
    )


@contextlib.contextmanager
def counted_traces():
    """Yields ``traces(name)``: how often JAX traced the jitted function ``name`` inside the
    block, read from the messages that ``jax.log_compiles`` logs under the ``jax`` logger. For
    retrace checks of library functions that take no user function to wrap with
    ``chex.assert_max_traces``; a check should also see a trace it expects, so that a changed
    message cannot make it pass on nothing."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("jax")  # the messages propagate from JAX's own modules
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield lambda name: sum(
                m.startswith(f"Finished tracing {name} for jit") for m in messages
            )
    finally:
        logger.removeHandler(handler)
