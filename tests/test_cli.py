"""The `iba-jax` command: convert, build-data and warnings (the others have their own test
files)."""

import logging
import warnings

import numpy as np
import pytest

from iba_jax import cli, evaluation, methods
from iba_jax.bundle import load_bundle
from iba_jax.cli import main
from iba_jax.data import building  # (importing it installs the log filter under test)
from iba_jax.diagnostics import FlatLambdaWarning
from iba_jax.methods import MethodSettings
from iba_jax.models import DenseNet, ResNet, densenet_tiny, resnet_tiny
from iba_jax.models.torch_import import variables_from_state_dict
from iba_jax.pretrained import pretrained_dir


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
    captured = capsys.readouterr()
    out = captured.out
    assert "regression_64_mini" in out and "train 32, validation 8, test 8" in out
    # No TFDS chatter: "Downloading and preparing dataset Unknown size" is wrong offline.
    assert "Downloading" not in out and "downloaded and prepared" not in out
    assert "dataset_info.json" not in captured.err


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


def test_convert_refuses_weights_with_nan_or_infinite_values(tmp_path, tiny_state_dict, capsys):
    broken = dict(tiny_state_dict)
    weight = np.array(broken["features.conv0.weight"], np.float32)
    weight.flat[[0, 5]] = [np.nan, np.inf]
    broken["features.conv0.weight"] = weight
    np.savez(tmp_path / "tiny.npz", **broken)
    assert main(["convert", str(tmp_path / "tiny.npz"), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert "tensors with NaN or infinite values" in err
    assert f"features.conv0.weight: 2 of {weight.size}" in err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("w.safetensors", b"not tensors at all", "'w.safetensors' is not a safetensors file"),
        ("w.pt", bytes(range(7, 200)), "'w.pt' is not a torch file"),
        ("w.pth", b"", "'w.pth' is not a torch file"),
        ("w.npz", b"plain text", "'w.npz' is not a .npz archive of tensors"),
    ],
)
def test_convert_names_a_file_that_is_not_what_its_suffix_says(
    tmp_path, capsys, name, content, message
):
    (tmp_path / name).write_bytes(content)
    assert main(["convert", str(tmp_path / name), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("command", "option", "value", "expected"),
    [
        ("explain", "--batch-size", "0", "expected an integer >= 1; got '0'"),
        ("explain", "--batch-size", "-3", "expected an integer >= 1; got '-3'"),
        ("explain", "--limit", "-1", "expected an integer >= 1; got '-1'"),
        ("explain", "--seed", "-1", "expected an integer in [0, 4294967295]; got '-1'"),
        ("explain", "--seed", "1.5", "expected an integer in [0, 4294967295]; got '1.5'"),
        ("evaluate", "--limit", "0", "expected an integer >= 1; got '0'"),
        ("evaluate", "--sensitivity-samples", "-2", "expected an integer >= 0; got '-2'"),
        ("evaluate", "--cases-per-call", "0", "expected an integer >= 1; got '0'"),
        ("evaluate", "--num-processes", "0", "expected an integer >= 1; got '0'"),
        ("evaluate", "--process-id", "-1", "expected an integer >= 0; got '-1'"),
        ("estimate", "--images", "0", "expected an integer >= 1; got '0'"),
        ("estimate", "--batch-size", "x", "expected an integer >= 1; got 'x'"),
        ("demo", "--images", "0", "expected an integer >= 1; got '0'"),
        ("convert", "--image-size", "-224", "expected an integer >= 1; got '-224'"),
        ("convert", "--in-channels", "2", "invalid choice: 2"),
    ],
)
def test_numeric_options_are_checked_by_the_parser(capsys, command, option, value, expected):
    required = {
        "explain": ["x.png", "--model", "m", "--out", "o"],
        "evaluate": ["cxr_phantoms", "--model", "m", "--out", "o"],
        "estimate": ["cxr_phantoms", "--model", "m"],
        "demo": [],
        "convert": ["w.npz", "out"],
    }[command]
    with pytest.raises(SystemExit) as exit_:
        main([command, *required, option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {expected}" in err


def test_a_bad_target_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    for target in ("²", "4", "Pneumonia"):
        args = ["explain", "x.png", "--model", str(pretrained_dir("phantoms_cls"))]
        assert main([*args, "--target", target, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "--target: expected positives, an output index below 4 or one of" in err
        assert f"got {target!r}" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing was started


def test_build_data_names_what_to_download_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    for extra, message in (
        ([], "manual_dir: nih_chest_xray14 is built from its downloaded release; got none."),
        (["--manual-dir", str(tmp_path / "missing")], "missing is not a folder."),
        (["--manual-dir", str(tmp_path / "empty")], "empty is empty."),
    ):
        build = ["build-data", "nih_chest_xray14", "--data-dir", str(tmp_path / "tfds"), *extra]
        assert main(build) == 2
        err = capsys.readouterr().err
        assert message in err and "Download NIH ChestX-ray14 from" in err
        assert len(err.strip().splitlines()) == 1
    build = ["build-data", "cxr_phantoms", "--config", "regression_64_mini"]
    assert main([*build, "--data-dir", str(tmp_path / "file")]) == 2
    assert "data_dir: expected a folder for the built data sets;" in capsys.readouterr().err


def test_tfds_advice_to_install_opencv_is_not_shown(caplog):
    absl = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING, logger="absl"):
        absl.warning("OpenCV is not installed. We recommend using OpenCV because it is faster")
        absl.warning("a warning that matters")
    assert "OpenCV" not in caplog.text and "a warning that matters" in caplog.text


def test_a_warning_is_one_line_on_stderr_naming_the_command(monkeypatch, capsys):
    def sweep_that_warns(args):
        warnings.warn("flat λ at 'denseblock3' in 1 of 2 images", FlatLambdaWarning, stacklevel=2)

    monkeypatch.setattr(cli, "_beta_sweep", sweep_that_warns)
    command = ["beta-sweep", "--model", "phantoms_cls", "cxr_phantoms", "--data-dir", "unused"]
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the suite ignores this warning elsewhere
        assert main(command) == 0
    err = capsys.readouterr().err
    assert err == "\niba-jax beta-sweep: warning: flat λ at 'denseblock3' in 1 of 2 images\n"


def test_the_bottleneck_arguments_make_the_method_settings(capsys):
    evaluate = ["evaluate", "--model", "phantoms_cls", "cxr_phantoms", "--data-dir", "d"]
    args = cli.build_parser().parse_args([*evaluate, "--out", "o"])
    densenet, resnet = DenseNet(densenet_tiny()), ResNet(resnet_tiny())
    assert cli._method_settings(args, densenet) == MethodSettings()  # the paper's
    at_resnet = cli._method_settings(args, resnet)  # its standard layers
    assert (at_resnet.iba_layer, at_resnet.grad_cam_layer) == ("layer3", "layer4")
    assert at_resnet.multilayer_layers == ("layer1", "layer2", "layer3")
    chosen = ["--layer", "denseblock2", "--beta", "1", "--method-beta", "inverse_iba=30"]
    args = cli.build_parser().parse_args([*evaluate, "--out", "o", *chosen])
    settings = cli._method_settings(args, densenet)
    assert settings.iba_layer == "denseblock2" and settings.betas == methods.REFERENCE_BETAS
    assert settings.config_for("iba").beta == 1.0 and settings.config_for("inverse_iba").beta == 30
    for bad, message in [
        (["--beta", "0"], "expected comma-separated numbers > 0; got '0'"),
        (["--beta", "1,2"], "expected one number > 0; got '1,2'"),
        (["--method-beta", "30"], "expected METHOD=β, e.g. inverse_iba=30; got '30'"),
    ]:
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([*evaluate, "--out", "o", *bad])
        assert message in capsys.readouterr().err
    explain = ["explain", "a.png", "--model", "phantoms_cls", "--out", "o"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*explain, "--method-beta", "inverse=30"])
    assert "--method-beta: expected METHOD from iba, inverse_iba," in capsys.readouterr().err


def test_errors_name_the_options_and_the_commands_that_make_what_is_missing(
    tmp_path, tiny_state_dict, capsys
):
    # The library names its arguments and functions; the command line its options and commands.
    unbuilt = building.NotBuiltError("nih_chestxray14", "224", "/data/tfds")
    assert str(unbuilt).startswith("data_dir: nih_chestxray14/224 is not built under /data/tfds")
    assert cli.in_command_terms(unbuilt).endswith(
        "Run `iba-jax build-data nih_chestxray14 --config 224 --data-dir /data/tfds` first."
    )
    missing = evaluation.MissingStatsError("models/x", ("denseblock3",), ())
    assert cli.in_command_terms(missing).startswith("--model: models/x has no feature statistics")
    assert "Run `iba-jax estimate --model models/x DATASET" in cli.in_command_terms(missing)
    assert cli.in_command_terms(ValueError("target: expected")) == "--target: expected"
    assert cli.in_command_terms(ValueError("images: expected")) == "images: expected"
    np.savez(tmp_path / "tiny.npz", **tiny_state_dict)
    (tmp_path / "model").mkdir()
    assert main(["convert", str(tmp_path / "tiny.npz"), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert "exists; pass overwrite=True to replace it. (--overwrite replaces it.)" in err
