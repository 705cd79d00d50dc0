"""The demo report: every method on the page, every picture inlined and drawn, text escaped."""

import base64
import dataclasses
import html.parser
import io
import shutil
import subprocess

import numpy as np
import PIL.Image
import pytest

from iba_jax import demo
from iba_jax.attribute import IBAConfig
from iba_jax.cli import main
from iba_jax.methods import METHODS, MethodSettings
from iba_jax.pretrained import load_pretrained

QUICK = MethodSettings(iba=IBAConfig(steps=2, samples=2), unroll=False, ig_steps=4)


class Images(html.parser.HTMLParser):
    """The src and alt of every <img> of a page, and its text."""

    def __init__(self):
        super().__init__()
        self.images, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    parser = Images()
    parser.feed(page.read_text())
    return parser


# Three methods of different kinds (bits, a layer map, an input relevance): the page is the
# same loop for every method, and tests/test_methods.py runs every method. Gradients stand for
# the input relevances: LRP's program takes several times longer to compile.
SHOWN = ("iba", "grad_cam", "gradients")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    return demo.run_demo(folder, images=1, methods=SHOWN, settings=QUICK)


def test_the_demo_explains_with_every_method_but_the_random_control():
    assert set(demo.DEMO_METHODS) == {
        m for m in METHODS if m != "random" and not m.startswith("regression")
    }


def test_the_page_shows_every_method_with_inlined_pictures(page):
    parsed = parse(page)
    cases = demo.demo_cases(1)
    # Per case: the image, one map per method, the curves.
    assert len(parsed.images) == len(cases) * (len(SHOWN) + 2)
    for image in parsed.images:
        assert image["src"].startswith("data:image/png;base64,")  # self-contained
        picture = PIL.Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        assert np.asarray(picture.convert("L")).std() > 10  # drawn, not blank
    text = " ".join(parsed.text)
    for method in SHOWN:
        assert f"{method}: IoU" in text
    assert "Per method: means over the cases" in text
    # The time is each method's total, and labelled so (a mean would be per case).
    assert "total_seconds" in text and "its first compilation included" in text


def test_label_names_cannot_inject_markup(tmp_path):
    bundle = load_pretrained(demo.MODEL)
    hostile = ("<script>alert(1)</script>", "Nodule", "Effusion", "Cardiomegaly")
    page = demo.run_demo(
        tmp_path,
        images=1,
        methods=("grad_cam",),
        settings=QUICK,
        bundle=dataclasses.replace(bundle, label_names=hostile),
    )
    source = page.read_text()
    assert "<script>" not in source and "&lt;script&gt;" in source


def test_demo_command_prints_where_the_report_is(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_METHODS", ("grad_cam", "gradients"))
    (tmp_path / "file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "file")]) == 2  # at once, before any work
    assert f"out: expected a folder; {tmp_path / 'file'} is a file." in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "r"), "--images", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"the demo report: {(tmp_path / 'r' / 'index.html').resolve()}" in printed
    assert "compiling the model and each method on the first batch (first run only; kept in" in (
        printed
    )


# Run in the page after it loads (in a test copy only): the title says how many pictures
# decoded out of how many there are.
COUNT_LOADED = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.title = `loaded ${loaded} of ${images.length}`;
});
</script>"""


@pytest.mark.browser
def test_headless_chromium_loads_every_picture_and_draws_the_page(page, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (make test installs it as root)")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", COUNT_LOADED + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    total = len(parse(page).images)
    assert f"<title>loaded {total} of {total}</title>" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(PIL.Image.open(shot).convert("L"), np.float32)
    assert pixels.shape == (1600, 1200) and pixels.std() > 20  # not a blank page
