"""Weight import: exact agreement with torchvision, key spellings, file formats and refusals."""

import re
import sys
import zipfile

import jax
import numpy as np
import pytest

from iba_jax.models import DenseNet, densenet121, densenet_tiny
from iba_jax.models.torch_import import (
    StateDictMismatchError,
    canonical_state_dict,
    infer_config,
    load_state_dict,
    variables_from_state_dict,
)


def relative_error(actual, expected):
    return np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max()


def test_recipe_rebuilds_the_seeded_tensors(seeded_reference, seeded_state_dict):
    sums = [seeded_state_dict[str(k)].astype(np.float64).sum() for k in seeded_reference["keys"]]
    np.testing.assert_array_equal(sums, seeded_reference["param_sum_f64"])


@pytest.mark.slow
def test_seeded_densenet121_agrees_with_torchvision(seeded_reference, seeded_state_dict):
    variables, config = variables_from_state_dict(seeded_state_dict)
    assert config == densenet121(num_classes=14)
    net = DenseNet(config)
    x = np.asarray(seeded_reference["x"]).transpose(0, 2, 3, 1)
    layers = ("denseblock1", "denseblock2", "denseblock3", "norm5")
    outputs = jax.jit(net.encode, static_argnums=2)(variables, x, layers)
    for layer in layers:
        actual = np.asarray(outputs[layer]).transpose(0, 3, 1, 2)
        assert relative_error(actual, seeded_reference[f"out/{layer}"]) <= 1e-4, layer
    logits = jax.jit(net.apply)(variables, x)
    assert relative_error(logits, seeded_reference["logits"]) <= 1e-4


def old_style(key: str) -> str:
    """CheXNet's spelling: norm.1 / conv.2 inside dense layers and a Sequential classifier."""
    key = re.sub(r"(denselayer\d+)\.(norm|relu|conv)([12])\.", r"\1.\2.\3.", key)
    return key.replace("classifier.", "classifier.0.")


@pytest.mark.parametrize("prefix", ["", "module.", "module.densenet121."])
def test_old_names_and_wrapper_prefixes_load_identically(tiny_state_dict, prefix):
    expected, _ = variables_from_state_dict(tiny_state_dict)
    renamed = {prefix + old_style(k): v for k, v in tiny_state_dict.items()}
    assert any(".norm.1." in k for k in renamed)
    renamed[prefix + "features.norm0.num_batches_tracked"] = np.array(0)
    renamed[prefix + "op_threshs"] = np.zeros(3, np.float32)
    actual, _ = variables_from_state_dict(renamed)
    jax.tree.map(np.testing.assert_array_equal, actual, expected)


def test_infer_config_reads_the_architecture_from_shapes(tiny_state_dict):
    assert infer_config(tiny_state_dict, head="sigmoid") == densenet_tiny(head="sigmoid")


def test_missing_key_is_named(tiny_state_dict):
    broken = dict(tiny_state_dict)
    del broken["features.denseblock2.denselayer1.norm2.running_var"]
    with pytest.raises(
        StateDictMismatchError, match=r"missing keys \(1\):\n.*denselayer1\.norm2\.running_var"
    ):
        variables_from_state_dict(broken)


def test_unexpected_key_is_named(tiny_state_dict):
    extra = {**tiny_state_dict, "features.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(
        StateDictMismatchError, match=r"unexpected keys \(1\):\n\s+features\.extra\.weight"
    ):
        variables_from_state_dict(extra)


def test_wrong_shape_is_named(tiny_state_dict):
    broken = dict(tiny_state_dict)
    broken["features.transition1.conv.weight"] = np.zeros((16, 32, 3, 3), np.float32)
    with pytest.raises(
        StateDictMismatchError,
        match=r"features\.transition1\.conv\.weight: "
        r"expected \(16, 32, 1, 1\), got \(16, 32, 3, 3\)",
    ):
        variables_from_state_dict(broken)


def test_wrong_channel_count_is_named(tiny_state_dict):
    with pytest.raises(
        StateDictMismatchError,
        match=r"features\.conv0\.weight: expected \(16, 1, 7, 7\), got \(16, 3, 7, 7\)",
    ):
        variables_from_state_dict(tiny_state_dict, densenet_tiny(in_channels=1))


def test_not_a_densenet_is_refused():
    with pytest.raises(StateDictMismatchError, match=r"features\.conv0\.weight"):
        canonical_state_dict({"fc.weight": np.zeros((2, 2))})


def test_npz_and_safetensors_files(tmp_path, tiny_state_dict):
    from safetensors.numpy import save_file

    np.savez(tmp_path / "w.npz", **tiny_state_dict)
    save_file(tiny_state_dict, tmp_path / "w.safetensors")
    for name in ("w.npz", "w.safetensors"):
        loaded = load_state_dict(tmp_path / name)
        assert loaded.keys() == tiny_state_dict.keys()
        for key, value in tiny_state_dict.items():
            np.testing.assert_array_equal(loaded[key], value)


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"expected a \.npz, \.safetensors, \.pt or \.pth file; got 'w\.bin'"
    ):
        load_state_dict(tmp_path / "w.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict(tmp_path / "absent.npz")


def test_pt_without_torch_explains_the_export(tmp_path, monkeypatch):
    with zipfile.ZipFile(tmp_path / "w.pth", "w") as archive:  # as torch.save writes, not read
        archive.writestr("w/data.pkl", b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r"needs torch.*np\.savez"):
        load_state_dict(tmp_path / "w.pth")


def test_pt_checkpoint_through_torch(tmp_path, tiny_state_dict):
    torch = pytest.importorskip("torch")
    tensors = {
        "module.densenet121." + old_style(k): torch.from_numpy(v)
        for k, v in tiny_state_dict.items()
    }
    torch.save({"epoch": 3, "state_dict": tensors}, tmp_path / "chexnet.pth.tar")
    loaded = load_state_dict(tmp_path / "chexnet.pth.tar")
    actual, _ = variables_from_state_dict(loaded)
    expected, _ = variables_from_state_dict(tiny_state_dict)
    jax.tree.map(np.testing.assert_array_equal, actual, expected)


class _Arbitrary:
    """Stands for a pickled module: must never be unpickled."""


def test_pt_with_pickled_objects_is_refused(tmp_path, tiny_state_dict):
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {}, "model": _Arbitrary()}, tmp_path / "module.pt")
    with pytest.raises(ValueError, match="holds more than tensors"):
        load_state_dict(tmp_path / "module.pt")
