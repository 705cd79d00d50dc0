"""``iba-jax explain``: PNG, JPEG and DICOM in; maps, overlays and records out; bad files named."""

import json
import subprocess

import jax
import numpy as np
import PIL.Image
import pytest
from conftest import BRIXIA_PUBLIC, needs_brixia_public
from dicom_files import write_dicom

from iba_jax import explain
from iba_jax.attribute import IBAConfig
from iba_jax.bundle import InputSpec, ModelBundle
from iba_jax.cli import main
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8
from iba_jax.evaluation import load_stats
from iba_jax.methods import MethodSettings
from iba_jax.models import DenseNet, densenet_tiny
from iba_jax.pretrained import load_pretrained, pretrained_dir
from iba_jax.records import read_rows

MODEL = pretrained_dir("phantoms_cls")


def phantom(index):
    return phantoms.generate("classification", 128, 0, "test", index)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A phantom with findings as 8-bit PNG, as RGB JPEG at 256 px, and as 12-bit DICOM at
    192 px (MONOCHROME1: inverted), plus a file that is no image."""
    folder = tmp_path_factory.mktemp("images")
    first = next(p for p in map(phantom, range(50)) if p.labels.sum() >= 1)
    pixels = to_uint8(first.image)
    PIL.Image.fromarray(pixels).save(folder / "scan.png")
    big = PIL.Image.fromarray(pixels).resize((256, 256), PIL.Image.Resampling.BILINEAR)
    big.convert("RGB").save(folder / "scan_rgb.jpg", quality=95)
    stored = np.round((1 - np.asarray(big.resize((192, 192)), np.float64) / 255) * 4095)
    write_dicom(folder / "scan.dcm", stored.astype(np.uint16), photometric="MONOCHROME1")
    (folder / "notes.png").write_text("not an image")
    return folder, first


def test_model_image_reads_every_format_as_the_builders_store_it(files):
    folder, truth = files
    bundle = load_pretrained("phantoms_cls")
    png = explain.model_image(bundle, folder / "scan.png")
    assert png.shape == (128, 128, 1) and png.dtype == np.uint8
    np.testing.assert_array_equal(png[..., 0], to_uint8(truth.image))
    # Resampled and lossy: close, not equal (DICOM pixels are also stretched to [0, 1]).
    for other in ("scan_rgb.jpg", "scan.dcm"):
        pixels = explain.model_image(bundle, folder / other)
        assert pixels.shape == (128, 128, 1)
        assert np.corrcoef(pixels.ravel(), png.ravel())[0, 1] > 0.98
    jpeg = explain.model_image(bundle, folder / "scan_rgb.jpg")
    assert np.abs(jpeg.astype(float) - png).mean() < 4


def test_targets_by_name_index_and_positives():
    bundle = load_pretrained("phantoms_cls")
    outputs = np.array([0.9, 0.1, 0.7, 0.2])
    assert explain.choose_targets(bundle, outputs, "positives") == [
        (0, "positive"),
        (2, "positive"),
    ]
    assert explain.choose_targets(bundle, outputs * 0.1, "positives") == [(0, "highest")]
    assert explain.choose_targets(bundle, outputs, "effusion") == [(2, "name")]
    assert explain.choose_targets(bundle, outputs, "3") == [(3, "index")]
    for bad in ("4", "Pneumonia", "-1"):
        with pytest.raises(ValueError, match="target: expected positives"):
            explain.choose_targets(bundle, outputs, bad)
    with pytest.raises(ValueError, match="method: expected one of"):
        explain.method_name("lime")
    with pytest.raises(ValueError, match="needs each image's true score"):
        explain.method_name("regression_iba_mse")


def test_explain_command_writes_maps_overlays_and_records(files, tmp_path, capsys):
    folder, truth = files
    images = [str(folder / n) for n in ("scan.png", "notes.png", "scan_rgb.jpg", "scan.dcm")]
    out = tmp_path / "out"
    args = ["explain", *images, "--model", str(MODEL), "--method", "gradcam", "--out", str(out)]
    assert main([*args, "--batch-size", "2"]) == 1  # one file failed, the others done
    captured = capsys.readouterr()
    assert f"failed: {images[1]}: not a PNG, JPEG or DICOM image (it starts with b'not an i')" in (
        captured.err
    )
    assert "explained 3 of 4 image(s)" in captured.out
    positives = [phantoms.FINDINGS[i] for i in np.nonzero(truth.labels)[0]]
    for stem in ("scan", "scan_rgb"):
        for name in positives:  # the model finds the phantom's findings: each is explained
            record = json.loads((out / f"{stem}.{name}.grad_cam.json").read_text())
            assert record["target"]["name"] == name and record["target"]["chosen_by"] == "positive"
            assert record["predictions"][name] >= 0.5 and record["method"] == "grad_cam"
            assert record["total_bits"] is None and record["versions"]["jax"]
            attribution = np.load(out / f"{stem}.{name}.grad_cam.npy")
            assert attribution.shape == (128, 128)
            assert record["map_sum"] == pytest.approx(float(attribution.sum()), rel=1e-5)
            overlay = np.asarray(PIL.Image.open(out / f"{stem}.{name}.grad_cam.png").convert("L"))
            assert overlay.std() > 10  # drawn, not blank
    assert list(out.glob("scan.*.grad_cam.json")) and list(out.glob("notes.*")) == []
    refused = tmp_path / "refused"
    assert (
        main(["explain", images[0], "--model", str(MODEL), "--target", "x", "--out", str(refused)])
        == 2
    )
    assert "--target: expected positives" in capsys.readouterr().err
    assert not refused.exists()  # the target is checked before anything is written


def test_iba_records_total_bits_and_batching_does_not_change_maps(files, tmp_path):
    folder, _ = files
    bundle = load_pretrained("phantoms_cls")
    stats = load_stats(MODEL, ["denseblock3"])
    settings = MethodSettings(iba=IBAConfig(steps=3, samples=2), unroll=False)
    images = [str(folder / "scan.png"), str(folder / "scan_rgb.jpg"), str(folder / "scan.png")]
    inputs = explain.file_inputs(bundle, images)
    run = lambda out, batch: explain.explain(
        inputs, bundle, stats, "iba", "Mass", out, settings=settings, batch_size=batch
    )
    one = run(tmp_path / "one", 1)
    three = run(tmp_path / "three", 3)
    assert [p.name for p in one.written] == [
        "scan.Mass.iba.json",
        "scan_rgb.Mass.iba.json",
        "scan-2.Mass.iba.json",  # a second file of the same name is numbered
    ]
    for a, b in zip(one.written, three.written, strict=True):
        np.testing.assert_allclose(
            np.load(a.with_suffix(".npy")), np.load(b.with_suffix(".npy")), rtol=1e-4, atol=1e-6
        )
        record = json.loads(a.read_text())
        assert record["unit"] == "bits" and record["total_bits"] > 0
        assert record["settings"]["iba"]["steps"] == 3


def test_a_killed_run_resumes_and_the_list_has_every_input_once(files, tmp_path):
    folder, _ = files
    bundle = load_pretrained("phantoms_cls")
    names = ("scan.png", "notes.png", "scan_rgb.jpg", "scan.dcm")
    inputs = explain.file_inputs(bundle, [folder / n for n in names])
    run = lambda **kw: explain.explain(
        inputs, bundle, {}, "gradcam", "positives", tmp_path, batch_size=2, **kw
    )

    def killed_after_one(batches):
        yield next(batches)
        raise KeyboardInterrupt  # as a kill between batches

    with pytest.raises(KeyboardInterrupt):
        run(progress=killed_after_one)
    first = read_rows(tmp_path / explain.INDEX)
    assert {r["input"] for r in first} == {inputs[0].origin, inputs[1].origin}
    again = run()
    assert again.already_done == sum(not r["error"] for r in first) > 0
    assert [origin for origin, _ in again.failed] == [inputs[1].origin]  # tried again
    rows = read_rows(tmp_path / explain.INDEX)
    assert rows[: len(first) - 1] == [r for r in first if not r["error"]]
    assert {r["input"] for r in rows} == {i.origin for i in inputs}  # no gap
    keys = [(r["identity"], r["target"], r["error"]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing twice
    failed = [r for r in rows if r["error"]]
    assert [r["input"] for r in failed] == [inputs[1].origin]  # the retry's row only
    for r in rows:
        if not r["error"]:
            record = json.loads((tmp_path / r["record"]).read_text())
            assert record["map_sum"] == pytest.approx(float(r["map_sum"]))


def test_resuming_is_keyed_on_what_determines_the_map(files, tmp_path, capsys):
    """Another image, a fixed file, the same stem from another folder and the same image at
    another position are explained; another method or model is refused, not skipped."""
    folder, _ = files
    other = tmp_path / "other"
    other.mkdir()
    (other / "scan.png").write_bytes((folder / "scan_rgb.jpg").read_bytes())  # same stem
    (other / "fixed.png").write_text("broken for now")
    out = tmp_path / "out"
    settings = ["--target", "0", "--out", str(out)]
    explaining = lambda *paths, method="gradcam", model=MODEL: main(
        ["explain", *map(str, paths), "--model", str(model), "--method", method, *settings]
    )
    assert explaining(folder / "scan.png", other / "fixed.png") == 1
    capsys.readouterr()
    PIL.Image.open(folder / "scan.png").save(other / "fixed.png")
    assert explaining(other / "scan.png", other / "fixed.png", folder / "scan.png") == 0
    assert "explained 3 of 3 image(s) (2 map(s), 1 already there)" in capsys.readouterr().out
    rows = read_rows(out / explain.INDEX)
    assert [r["name"] for r in rows] == ["scan", rows[1]["name"], "fixed"]
    assert rows[1]["name"].startswith("scan-") and len(rows[1]["name"]) == len("scan-") + 8
    assert not any(r["error"] for r in rows)  # the fixed file's failure is superseded
    same = np.load(out / "scan.Mass.grad_cam.npy")
    np.testing.assert_array_equal(same, np.load(out / "fixed.Mass.grad_cam.npy"))  # same pixels
    for method, model, changed in (
        ("gradients", MODEL, "method"),
        ("gradcam", pretrained_dir("phantoms_cls_weighted"), "model_sha256"),
    ):
        assert explaining(folder / "scan.png", method=method, model=model) == 2
        err = capsys.readouterr().err
        assert f"were computed with other {changed}" in err and "explain into a new folder" in err
        assert len(err.strip().splitlines()) == 1


def test_a_folder_whose_run_made_no_map_takes_other_settings(files, tmp_path, capsys):
    folder, _ = files
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    out = tmp_path / "out"
    explaining = lambda path, method: main(
        ["explain", str(path), "--model", str(MODEL), "--method", method, "--out", str(out)]
    )
    assert explaining(broken, "gradients") == 1  # a record, a failure, no map
    assert json.loads(explain.settings_path(out).read_text())["method"] == "gradients"
    capsys.readouterr()
    assert explaining(folder / "scan.png", "gradcam") == 0  # nothing bound: record replaced
    assert json.loads(explain.settings_path(out).read_text())["method"] == "grad_cam"
    assert explaining(folder / "scan.png", "gradients") == 2  # now a map binds the folder
    assert "were computed with other method (method='grad_cam')" in capsys.readouterr().err


def test_maps_do_not_depend_on_the_order_of_the_inputs(files, tmp_path):
    folder, _ = files
    bundle = load_pretrained("phantoms_cls")
    stats = load_stats(MODEL, ["denseblock3"])
    settings = MethodSettings(iba=IBAConfig(steps=3, samples=2), unroll=False)
    paths = [folder / "scan.png", folder / "scan_rgb.jpg"]
    for order, out in ((paths, "a"), (paths[::-1], "b")):
        inputs = explain.file_inputs(bundle, order)
        explain.explain(inputs, bundle, stats, "iba", "0", tmp_path / out, settings=settings)
    for stem in ("scan", "scan_rgb"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / f"{stem}.Mass.iba.npy"),
            np.load(tmp_path / "b" / f"{stem}.Mass.iba.npy"),
        )


def test_an_output_folder_that_cannot_be_written_is_refused_first(files, tmp_path, capsys):
    folder, _ = files
    (tmp_path / "file").write_text("")
    cases = [
        (tmp_path / "file", "out: expected a folder; "),
        (tmp_path / "file" / "under", "out: cannot write into "),
    ]
    immutable = tmp_path / "immutable"  # even root cannot write here (a read-only folder is
    immutable.mkdir()  # no test as root)
    if subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode == 0:
        cases.append((immutable, "(Operation not permitted)"))
    try:
        for out, message in cases:
            args = ["explain", str(folder / "scan.png"), "--model", str(MODEL), "--out", str(out)]
            assert main(args) == 2
            err = capsys.readouterr().err
            assert message in err and len(err.strip().splitlines()) == 1, err
    finally:
        subprocess.run(["chattr", "-i", str(immutable)], capture_output=True)


def test_a_data_set_split_explained_for_an_rgb_model(tmp_path):
    net = DenseNet(densenet_tiny(num_classes=4, in_channels=3))
    bundle = ModelBundle(
        net.config, net.init(jax.random.key(0), 64), phantoms.FINDINGS, InputSpec.named("none", 64)
    )
    gray = to_uint8(phantom(2).image)[::2, ::2, None]  # stored with one channel, 64 px
    source = [{"image": gray}, {"image": np.zeros((32, 32, 1), np.uint8)}]
    inputs = explain.dataset_inputs(source, "test", "cxr_phantoms/classification_64")
    assert [i.name for i in inputs] == ["test_000000", "test_000001"]
    result = explain.explain(inputs, bundle, {}, "gradients", "0", tmp_path, batch_size=2)
    assert [p.name for p in result.written] == ["test_000000.Mass.gradients.json"]
    assert result.failed[0][0] == "cxr_phantoms/classification_64:test[1]"
    assert "expected a uint8 image of shape (64, 64, 3) or (64, 64, 1)" in result.failed[0][1]
    attribution = np.load(tmp_path / "test_000000.Mass.gradients.npy")
    assert attribution.shape == (64, 64) and np.ptp(attribution) > 0


@needs_brixia_public
def test_the_real_regressor_explains_real_files_as_predict_scores_them(tmp_path):
    """docs/results_real.md's six-case figure in small: a real radiograph (an RGBA PNG with a
    space in its name), the shipped real regressor, the bottleneck the evaluation chose."""
    path = str(BRIXIA_PUBLIC / "images" / "immagine 2.png")
    settings = ["--layer", "denseblock2", "--method-beta", "regression_iba_deviation=1"]
    out = tmp_path / "maps"
    explain_args = ["explain", path, "--model", "brixia_public_reg", "--method", "regression"]
    assert main([*explain_args, *settings, "--out", str(out)]) == 0
    record = json.loads((out / "immagine 2.global_score.regression_iba_deviation.json").read_text())
    m = np.load(out / "immagine 2.global_score.regression_iba_deviation.npy")
    assert m.shape == (128, 128) and np.isfinite(m).all() and m.sum() > 0
    assert record["settings"]["betas"] == [["regression_iba_deviation", 1.0]]
    assert record["settings"]["iba_layer"] == "denseblock2"
    predict_args = ["predict", path, "--model", "brixia_public_reg"]
    assert main([*predict_args, "--out", str(tmp_path / "p.csv")]) == 0
    (row,) = read_rows(tmp_path / "p.csv")
    assert record["predictions"]["global_score"] == pytest.approx(float(row["global_score"]))
