"""The package as a user installs it: built into a wheel, installed apart from the checkout,
with its data (every shipped model, the segmenter, the report template) inside."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

CHECK = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import jinja2

    import iba_jax
    from iba_jax.pretrained import PRETRAINED, load_pretrained, pretrained_dir
    from iba_jax.bundle import stats_layers
    from iba_jax.segmentation import load_segmenter

    site = Path(sys.argv[1]).resolve()
    assert Path(iba_jax.__file__).resolve().is_relative_to(site), iba_jax.__file__
    for name in PRETRAINED:
        bundle = load_pretrained(name)  # checksums verified
        assert stats_layers(pretrained_dir(name)), f"{name} has no feature statistics"
    load_segmenter()
    loader = jinja2.PackageLoader("iba_jax", "templates")
    assert loader.list_templates(), "no report template"
    print("installed:", len(PRETRAINED), "models")
    """
)


@pytest.mark.slow
def test_the_installed_wheel_has_every_shipped_file(tmp_path):
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            source.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "iba_jax", source / "iba_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)]
    subprocess.run(build, check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("iba_jax-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    run = subprocess.run(
        [sys.executable, "-c", CHECK, str(site)],
        cwd=tmp_path,  # not the checkout: iba_jax comes from the installed wheel
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "installed: " in run.stdout
