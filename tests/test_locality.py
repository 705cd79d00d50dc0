"""Layer locality: a model whose locality is known by construction, the regions on a layer's
grid, receptive fields against a measured one, and what is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probes import CELL, LocalAndGlobalProbe, probe_setting

from iba_jax.cli import main
from iba_jax.locality import cells_under, layer_locality
from iba_jax.models import DenseNet, densenet_tiny


def test_the_local_layer_is_recommended_and_the_global_one_is_not():
    images, masks, stats = probe_setting()
    report = layer_locality(
        LocalAndGlobalProbe(), {}, stats, images, masks, 0, key=jax.random.key(0)
    )
    cells, pooled = report.layers
    assert (cells.layer, cells.grid, cells.receptive_field) == ("cells", (8, 8), CELL)
    assert pooled.receptive_field == 64 and cells.inside_share == 4 / 64
    assert cells.evidence == pytest.approx(4.0, abs=0.05)  # the square's sum of cell means
    # cells: the square's 4 cells carry all of the output (4.0); noising them removes it all,
    # noising the other 60 (zeros, like the prior's mean) nothing. The noise's own share: a sum
    # of at most 64 draws of std 0.01, averaged over 8 samples and 6 images, has a std of
    # 0.01 * 8 / sqrt(48) = 0.012 against an evidence of 4 (0.3 %); hence abs=0.02.
    assert cells.removed_inside == pytest.approx(1.0, abs=0.02)
    assert cells.removed_outside == pytest.approx(0.0, abs=0.02)
    # pooled: each of the 64 cells carries 1/16 of it; the square's 4 cells remove 4/64.
    assert pooled.removed_inside == pytest.approx(4 / 64, abs=0.02)
    assert pooled.removed_outside == pytest.approx(60 / 64, abs=0.02)
    assert cells.local and not pooled.local and report.recommended == "cells"
    chunked = layer_locality(
        LocalAndGlobalProbe(), {}, stats, images, masks, key=jax.random.key(0), images_per_call=4
    )  # 6 images: a call of 4, then 2 padded to 4
    for alone, part in zip(report.layers, chunked.layers, strict=True):
        assert part._replace(evidence=0, removed_inside=0, removed_outside=0) == alone._replace(
            evidence=0, removed_inside=0, removed_outside=0
        )
        np.testing.assert_allclose(part[4:7], alone[4:7], rtol=1e-6)
    only_global = layer_locality(
        LocalAndGlobalProbe(), {}, stats, images, masks, layers=["pooled"], key=jax.random.key(0)
    )
    assert only_global.recommended is None


def test_cells_under_a_mask_on_a_grid_that_does_not_divide_the_image():
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0, 9] = True  # the top-right pixel
    masks[0, 5, 4] = True
    cells = cells_under(masks, (3, 3))  # rows/columns 0-4, 3-7, 6-10 (rounded outwards)
    expected = np.zeros((3, 3), bool)
    expected[0, 2] = True
    expected[1, 1] = True  # pixel (5, 4) lies in the middle cell only
    np.testing.assert_array_equal(cells[0], expected)
    assert cells_under(np.ones((2, 10, 10), bool), (3, 3)).all()


def measured_extent(net, variables, layer, size=160):
    """Columns of the input that change the middle cell of ``layer``'s grid: each column in
    turn set to 1000 (a value that passes any max-pool and some ReLU of every path)."""
    x = jax.random.normal(jax.random.key(1), (1, size, size, 3))
    encode = jax.jit(lambda x: net.encode(variables, x, layer))
    clean = np.asarray(encode(x)[0])
    cell = (clean.shape[0] // 2, clean.shape[1] // 2)
    columns = []
    for chunk in np.array_split(np.arange(size), 4):
        bright = jnp.repeat(x, len(chunk), axis=0).at[np.arange(len(chunk)), :, chunk].set(1e3)
        moved = np.any(np.asarray(encode(bright)[:, cell[0], cell[1]]) != clean[cell], axis=-1)
        columns += list(chunk[moved])
    return max(columns) - min(columns) + 1


@pytest.mark.parametrize("layer", ["conv0", "pool0", "denseblock1", "transition1", "denseblock2"])
def test_the_receptive_field_is_the_measured_one(layer):
    net = DenseNet(densenet_tiny())
    variables = net.init(jax.random.key(0), 64)
    assert net.config.receptive_field(layer) == measured_extent(net, variables, layer)


def test_bad_inputs_are_refused():
    images, masks, stats = probe_setting(2)
    probe = LocalAndGlobalProbe()
    run = lambda **changes: layer_locality(
        probe,
        {},
        changes.get("stats", stats),
        changes.get("images", images),
        changes.get("masks", masks),
        changes.get("targets", 0),
        key=jax.random.key(0),
    )
    with pytest.raises(ValueError, match=r"masks: expected one \(H, W\) region per image"):
        run(masks=masks[:, :32])
    with pytest.raises(ValueError, match="masks: expected booleans; got uint8"):
        run(masks=masks.astype(np.uint8))
    empty = masks.copy()
    empty[1] = False
    with pytest.raises(ValueError, match=r"masks: expected a region in every image; images \[1\]"):
        run(masks=empty)
    with pytest.raises(ValueError, match="targets: expected output indices"):
        run(targets=0.5)
    with pytest.raises(ValueError, match="targets"):
        run(targets=1)  # the probe has one output
    small = {k: v._replace(mean=v.mean[:4, :4]) for k, v in stats.items()}
    with pytest.raises(ValueError, match=r"stats: expected statistics of the 'cells' feature"):
        run(stats=small)
    with pytest.raises(ValueError, match="stats: expected FeatureStats for every layer"):
        layer_locality(
            probe,
            {},
            {"pooled": stats["pooled"]},
            images,
            masks,
            layers=["cells"],
            key=jax.random.key(0),
        )
    silent = {k: v._replace(std=jnp.zeros_like(v.std)) for k, v in stats.items()}
    with pytest.raises(ValueError, match="images: the noise removes no evidence"):
        # dark images and a prior of exactly 0: noising changes nothing
        layer_locality(
            probe, {}, silent, np.zeros_like(images), masks, min_std=0.0, key=jax.random.key(0)
        )


def test_the_command_measures_a_shipped_model_on_a_data_set(tmp_path, capsys):
    data = ["cxr_phantoms", "--config", "classification_128_mini", "--data-dir", str(tmp_path)]
    command = ["layer-locality", "--model", "phantoms_cls", *data, "--split", "test"]
    assert main([*command, "--limit", "3", "--layers", "denseblock1", "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| layer | grid | receptive field (px) |" in printed
    assert "| denseblock1 | 32x32 | 27 |" in printed
    assert "regions in 3 images of cxr_phantoms/classification_128_mini split test" in printed
    assert main([*command, "--layers", "denseblock9"]) == 2
    assert "--layers: expected one of" in capsys.readouterr().err
