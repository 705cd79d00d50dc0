"""Every Python example of README.md runs as written, in a fresh working folder: the model
API example alone, the others in order in one namespace (the later ones use names that the
attribution example defines)."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The fenced ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def run_blocks(blocks: list[tuple[int, str]]) -> dict:
    """Runs the blocks in one namespace; any warning (a flat λ included) fails."""
    namespace: dict = {}
    for number, block in blocks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                exec(compile(block, f"README.md python example {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"README python example {number} fails:\n{block}") from error
    return namespace


BLOCKS = list(enumerate(python_blocks(README.read_text()), 1))


def test_the_blocks_are_found():
    blocks = python_blocks("a\n```python\nx = 1\n```\n```\nshell\n```\n```python\ny = 2\n```\n")
    assert blocks == ["x = 1\n", "y = 2\n"]
    assert len(BLOCKS) >= 4 and "densenet121" in BLOCKS[0][1]


@pytest.mark.slow  # builds and runs DenseNet-121
def test_the_model_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = run_blocks(BLOCKS[:1])
    assert names["logits"].shape == (8, 14) and names["h"].shape == (8, 14, 14, 1024)
    np.testing.assert_allclose(names["logits_again"], names["logits"], rtol=1e-4, atol=1e-5)
    assert set(names["feats"]) == {"denseblock1", "denseblock2", "denseblock3"}


def test_the_other_examples_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = run_blocks(BLOCKS[1:])
    assert names["maps"].shape == (2, 128, 128) and np.all(np.isfinite(names["maps"]))
    assert (tmp_path / "my_model" / "stats" / "denseblock3").is_dir()
    assert len(names["source"]) == 8  # the mini data set's test split
