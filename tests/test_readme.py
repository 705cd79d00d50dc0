"""Every Python example of README.md runs as written, in order, in one namespace (the later
examples use names the earlier ones define), in a fresh working folder."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The fenced ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_the_blocks_are_found():
    blocks = python_blocks("a\n```python\nx = 1\n```\n```\nshell\n```\n```python\ny = 2\n```\n")
    assert blocks == ["x = 1\n", "y = 2\n"]


@pytest.mark.slow  # the model API example builds and runs DenseNet-121
def test_every_python_example_of_the_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"README.md python example {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"README python example {number} fails:\n{block}") from error
    # What the examples claim about their results.
    assert namespace["logits"].shape == (8, 14) and namespace["h"].shape == (8, 14, 14, 1024)
    assert namespace["maps"].shape == (4, 128, 128) and np.all(np.isfinite(namespace["maps"]))
    assert namespace["result"].mask.dtype == bool
    assert (tmp_path / "my_model" / "stats" / "denseblock3").is_dir()
