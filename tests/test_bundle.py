"""Model bundles: round trip, checksum refusal, input spec."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from iba_jax.bundle import CorruptBundleError, InputSpec, ModelBundle, load_bundle, save_bundle
from iba_jax.models import DenseNet, densenet_tiny


@pytest.fixture(scope="module")
def bundle():
    config = densenet_tiny(in_channels=1, head="sigmoid")
    variables = DenseNet(config).init(jax.random.key(0), 32)
    return ModelBundle(config, variables, ("mass", "nodule", "effusion"), InputSpec.named("xrv"))


def test_round_trip(tmp_path, bundle):
    checksum = save_bundle(tmp_path / "model", bundle)
    loaded = load_bundle(tmp_path / "model")
    assert loaded.config == bundle.config
    assert loaded.label_names == bundle.label_names
    assert loaded.input_spec == bundle.input_spec
    jax.tree.map(np.testing.assert_array_equal, loaded.variables, bundle.variables)
    assert json.loads((tmp_path / "model" / "bundle.json").read_text())["sha256"] == checksum


def largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_flipped_byte_is_refused(tmp_path, bundle):
    save_bundle(tmp_path / "model", bundle)
    data = largest_file(tmp_path / "model" / "variables")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptBundleError, match=r"model: .*(corrupt|cannot read)"):
        load_bundle(tmp_path / "model")


def test_edited_metadata_is_refused(tmp_path, bundle):
    save_bundle(tmp_path / "model", bundle)
    meta_path = tmp_path / "model" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["label_names"][0] = "pneumonia"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptBundleError, match="is corrupt: its content hashes to"):
        load_bundle(tmp_path / "model")


def test_existing_directory_needs_overwrite(tmp_path, bundle):
    save_bundle(tmp_path / "model", bundle)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_bundle(tmp_path / "model", bundle)
    save_bundle(tmp_path / "model", bundle, overwrite=True)
    assert load_bundle(tmp_path / "model").label_names == bundle.label_names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind


def test_missing_bundle_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a model bundle directory"):
        load_bundle(tmp_path)


def test_label_count_must_match_outputs(bundle):
    with pytest.raises(ValueError, match="label_names: expected 3 names"):
        ModelBundle(bundle.config, bundle.variables, ("a", "b"))


def test_input_spec_normalizes_per_channel():
    spec = InputSpec.named("imagenet")
    x = np.full((1, 2, 2, 3), 0.5, np.float32)
    expected = (0.5 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(spec.normalize(x)[0, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(InputSpec.named("xrv").normalize(np.ones((1, 2, 2, 1))), 1024.0)
    with pytest.raises(ValueError, match="normalization: expected one of"):
        InputSpec.named("zscore")
