"""The `iba-jax` command: convert and build-data (the others have their own test files)."""

import numpy as np
import pytest

from iba_jax.bundle import load_bundle
from iba_jax.cli import main
from iba_jax.models import DenseNet
from iba_jax.models.torch_import import variables_from_state_dict


def test_convert_writes_a_bundle_that_runs_like_the_weights(
    tmp_path, tiny_state_dict, tiny_reference, capsys
):
    np.savez(tmp_path / "tiny.npz", **tiny_state_dict)
    (tmp_path / "labels.txt").write_text("mass\nnodule\neffusion\n")
    code = main(
        [
            "convert",
            str(tmp_path / "tiny.npz"),
            str(tmp_path / "model"),
            "--head",
            "sigmoid",
            "--labels",
            f"@{tmp_path / 'labels.txt'}",
        ]
    )
    assert code == 0
    assert "wrote the model bundle" in capsys.readouterr().out
    bundle = load_bundle(tmp_path / "model")
    assert bundle.label_names == ("mass", "nodule", "effusion")
    assert bundle.config.head == "sigmoid"
    x = tiny_reference["x"].transpose(0, 2, 3, 1)
    expected, _ = variables_from_state_dict(tiny_state_dict)
    np.testing.assert_array_equal(
        DenseNet(bundle.config).apply(bundle.variables, x),
        DenseNet(bundle.config).apply(expected, x),
    )


def test_convert_refuses_weights_of_another_architecture(tmp_path, tiny_state_dict, capsys):
    np.savez(tmp_path / "tiny.npz", **tiny_state_dict)
    code = main(
        ["convert", str(tmp_path / "tiny.npz"), str(tmp_path / "model"), "--arch", "densenet121"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "missing keys" in err
        and "features.conv0.weight: expected (64, 3, 7, 7), got (16, 3, 7, 7)" in err
    )
    assert not (tmp_path / "model").exists()


def test_convert_refuses_a_wrong_number_of_labels(tmp_path, tiny_state_dict, capsys):
    np.savez(tmp_path / "tiny.npz", **tiny_state_dict)
    code = main(
        ["convert", str(tmp_path / "tiny.npz"), str(tmp_path / "model"), "--labels", "nih14"]
    )
    assert code == 2
    assert "labels: expected 3 names" in capsys.readouterr().err


def test_build_data_builds_and_reports_the_splits(tmp_path, capsys):
    args = ["build-data", "cxr_phantoms", "--config", "regression_64_mini"]
    assert main([*args, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "regression_64_mini" in out and "train 32, validation 8, test 8" in out
    assert main([*args, "--data-dir", str(tmp_path), "--on-bad-image", "skip"]) == 2
    assert "--on-bad-image: cxr_phantoms config 'regression_64_mini' has no such setting" in (
        capsys.readouterr().err
    )


def test_version_and_every_command_has_help_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("iba-jax 0.")
    for command in ("convert", "demo", "explain", "build-data", "estimate", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "example" in text and f"iba-jax {command} " in text, command
