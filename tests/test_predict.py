"""iba-jax predict: a model's outputs for image files, one CSV row per file."""

import hashlib

import numpy as np
import PIL.Image
import pytest
from conftest import BRIXIA_PUBLIC, needs_brixia_public

from iba_jax.cli import main
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8, unit_range
from iba_jax.explain import model_image
from iba_jax.models import predict
from iba_jax.pretrained import load_pretrained
from iba_jax.records import read_rows


def test_outputs_per_file_as_explain_reads_them(tmp_path, capsys):
    bundle = load_pretrained("phantoms_cls")
    files = []
    for index in (0, 1, 2):
        image = to_uint8(phantoms.generate("classification", 160, 0, "test", index).image)
        files.append(tmp_path / f"scan {index}.png")  # 160 px: resized as explain resizes
        PIL.Image.fromarray(image).convert("RGB" if index == 1 else "L").save(files[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths = [str(files[0]), str(tmp_path / "broken.png"), str(files[1]), str(files[2])]
    out = tmp_path / "preds.csv"
    command = ["predict", *paths, "--model", "phantoms_cls", "--out", str(out)]
    assert main([*command, "--batch-size", "2"]) == 1  # one file unreadable, the others done
    assert "broken.png: not a PNG, JPEG or DICOM image" in capsys.readouterr().err
    rows = read_rows(out)
    assert [r["file"] for r in rows] == [paths[0], paths[2], paths[3]]
    assert list(rows[0]) == ["file", "sha256", *bundle.label_names]
    expected = np.asarray(
        predict(
            bundle.model,
            bundle.variables,
            bundle.input_spec.normalize(
                unit_range(np.stack([model_image(bundle, f) for f in files]), 1)
            ),
        )
    )
    got = np.array([[float(r[name]) for name in bundle.label_names] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert rows[0]["sha256"] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert got.min() >= 0 and got.max() <= 1  # the sigmoid head's probabilities


def test_a_folder_as_out_is_refused(tmp_path, capsys):
    assert main(["predict", "x.png", "--model", "phantoms_reg", "--out", str(tmp_path)]) == 2
    assert f"out: expected a CSV file to write; {tmp_path} is a folder." in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--model", "phantoms_reg", "--out", "p.csv"])  # no image


@needs_brixia_public
def test_real_radiographs_of_every_kind(tmp_path):
    names = ["immagine 2.png", "covid-19-pneumonia-mild.JPG", "kjr-21-e24-g002-l-a.jpg"]
    paths = [str(BRIXIA_PUBLIC / "images" / n) for n in names]
    out = tmp_path / "preds.csv"
    assert main(["predict", *paths, "--model", "phantoms_reg", "--out", str(out)]) == 0
    rows = read_rows(out)
    assert [r["file"] for r in rows] == paths
    assert all(float(r["global_score"]) >= 0 for r in rows)  # the ReLU head
