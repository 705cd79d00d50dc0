"""Faithfulness, localisation and correlation metrics: hand-computed cases and sanity checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from iba_jax.metrics import correlation, faithfulness, localisation, paired
from iba_jax.metrics.ordering import pixel_ranks, top_pixels
from iba_jax.models import DenseNet, densenet_tiny


def pixel_sum(images, index=0):
    """A linear 'model': the sum of the pixels."""
    return images.sum(axis=(1, 2, 3))


def test_ranks_break_ties_in_raster_order():
    maps = jnp.array([[[1.0, 1.0], [2.0, 0.0]]])
    np.testing.assert_array_equal(pixel_ranks(maps)[0], [[1, 2], [0, 3]])
    np.testing.assert_array_equal(top_pixels(maps, [2])[0], [[True, False], [True, False]])


def test_insertion_deletion_hand_computed():
    image = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    curves = faithfulness.insertion_deletion(
        pixel_sum, image, image[..., 0], pixels_per_step=1, baseline="zero"
    )
    np.testing.assert_allclose(curves.fraction, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curves.insertion[0], [0, 4, 7, 9, 10])
    np.testing.assert_allclose(curves.deletion[0], [10, 6, 3, 1, 0])
    np.testing.assert_allclose(curves.insertion_auc, [6.25])
    np.testing.assert_allclose(curves.deletion_auc, [3.75])
    reverse = faithfulness.insertion_deletion(
        pixel_sum, image, -image[..., 0], pixels_per_step=1, baseline="zero"
    )
    assert reverse.insertion_auc[0] < curves.insertion_auc[0]
    assert reverse.deletion_auc[0] > curves.deletion_auc[0]
    uneven = faithfulness.insertion_deletion(
        pixel_sum, image, image[..., 0], pixels_per_step=3, baseline="zero"
    )
    np.testing.assert_allclose(uneven.fraction, [0, 0.75, 1])  # the last step moves fewer


def test_insertion_deletion_on_a_model():
    net = DenseNet(densenet_tiny(head="sigmoid"))
    variables = net.init(jax.random.key(0), 64)
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    maps = jax.random.uniform(jax.random.key(2), (2, 64, 64))
    score = faithfulness.target_score(net, variables, [0, 2])
    curves = faithfulness.insertion_deletion(score, images, maps, batch_size=16)
    assert curves.insertion.shape == curves.deletion.shape == (2, 51)
    probabilities = net.link(net.apply(variables, images))
    np.testing.assert_allclose(curves.deletion[:, 0], probabilities[[0, 1], [0, 2]], rtol=1e-5)
    assert np.all((curves.insertion_auc >= 0) & (curves.insertion_auc <= 1))


def test_sensitivity_n_is_one_for_the_exact_attribution_of_a_linear_model():
    images = jax.random.uniform(jax.random.key(0), (1, 16, 16, 1))
    ns, exact = faithfulness.sensitivity_n(
        pixel_sum, images, images[..., 0], jax.random.key(1), samples=30
    )
    np.testing.assert_allclose(exact, 1.0, atol=1e-5)
    assert ns[0] >= 1 and ns[-1] <= 0.8 * 256
    _, noise = faithfulness.sensitivity_n(
        pixel_sum,
        images,
        jax.random.uniform(jax.random.key(2), (1, 16, 16)),
        jax.random.key(1),
        samples=30,
    )
    assert np.nanmean(noise) < 0.9


def test_sensitivity_n_subsets_have_exactly_n_pixels_drawn_uniformly():
    sizes = jnp.asarray([1, 7, 100, 255])
    masks = faithfulness._random_subsets(jax.random.key(0), sizes, 4000, 16, 16)
    np.testing.assert_array_equal(
        masks.sum(axis=(2, 3)), np.broadcast_to(sizes[:, None], (4, 4000))
    )
    # Every pixel is chosen about n / 256 of the time (binomial: within 5 standard deviations).
    share = masks.mean(axis=1)  # (sizes, 16, 16)
    expected = (np.asarray(sizes) / 256)[:, None, None]
    spread = np.sqrt(expected * (1 - expected) / 4000)
    assert np.all(np.abs(share - expected) <= 5 * spread + 1e-9)
    # Sizes are drawn independently: the subsets of 100 are not nested in those of 255.
    assert not np.all(masks[3] >= masks[2])


def test_box_masks_iou_pointing_and_mass():
    mask = localisation.box_mask(np.array([[0.0, 0.0, 0.5, 0.5]]), 4, 4)
    assert mask.sum() == 4 and mask[:2, :2].all()
    maps = jnp.zeros((1, 4, 4)).at[0, 0, 0].set(3.0).at[0, 3, 3].set(1.0)
    truth = jnp.asarray(mask)[None]
    assert bool(localisation.pointing_game(maps, truth)[0])
    np.testing.assert_allclose(localisation.mass_inside(maps, truth), [0.75])
    predicted = jnp.zeros((1, 4, 4), bool).at[0, :2, :4].set(True)
    np.testing.assert_allclose(localisation.iou(predicted, truth), [0.5])
    area = localisation.binarize_for(maps, truth, "area")
    assert int(area.sum()) == 4 and bool(area[0, 0, 0]) and bool(area[0, 3, 3])
    with pytest.raises(ValueError, match="rule: expected one of"):
        localisation.binarize_for(maps, truth, "half")


def test_lung_zones_and_zone_iou():
    lungs = np.zeros((12, 10), bool)
    lungs[1:10, 1:4] = True
    lungs[3:12, 6:9] = True
    zones = localisation.lung_zones(lungs)
    assert sorted(np.unique(zones)) == list(range(7))
    assert (zones[1:4, 1:4] == 1).all() and (zones[7:10, 1:4] == 3).all()
    assert (zones[3:6, 6:9] == 4).all() and (zones[9:12, 6:9] == 6).all()
    scores = np.array([[0, 2, 0, 0, 0, 3]])
    perfect = jnp.asarray(np.isin(zones, [2, 6]), jnp.float32)[None]
    np.testing.assert_allclose(localisation.zone_iou(perfect, zones[None], scores), [1.0])


def test_pearson_and_its_random_control():
    a = jax.random.uniform(jax.random.key(0), (2, 64, 64))
    np.testing.assert_allclose(correlation.pearson(a, a), 1.0, rtol=1e-5)
    np.testing.assert_allclose(correlation.pearson(a, -a), -1.0, rtol=1e-5)
    assert np.isnan(correlation.pearson(jnp.ones((1, 4, 4)), a[:1, :4, :4])[0])
    control = correlation.random_map_pearson(jax.random.key(1), a)
    assert np.all(np.abs(control) < 0.1)


def test_pearson_within_a_region_is_numpys_on_the_pixels_inside():
    maps, severity = jax.random.uniform(jax.random.key(2), (2, 2, 32, 32))
    lungs = jax.random.uniform(jax.random.key(3), (2, 32, 32)) < 0.3
    inside = correlation.pearson(maps, severity, lungs)
    for i in range(2):
        chosen = np.asarray(lungs[i])
        expected = np.corrcoef(np.asarray(maps[i])[chosen], np.asarray(severity[i])[chosen])[0, 1]
        np.testing.assert_allclose(inside[i], expected, rtol=1e-5)
    everywhere = jnp.ones_like(lungs)
    np.testing.assert_allclose(
        correlation.pearson(maps, severity, everywhere),
        correlation.pearson(maps, severity),
        rtol=1e-6,
    )
    # A map that only marks the region: high over the whole image, undefined inside it.
    marks = lungs.astype(jnp.float32)
    assert np.all(np.asarray(correlation.pearson(marks, marks * (1 + severity))) > 0.8)
    assert np.all(np.isnan(correlation.pearson(marks, severity, lungs)))


def test_bad_maps_are_refused_by_name():
    images = jnp.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="maps: expected one map per image of shape"):
        faithfulness.insertion_deletion(pixel_sum, images, jnp.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="maps: expected finite values"):
        faithfulness.insertion_deletion(pixel_sum, images, jnp.full((1, 8, 8), jnp.nan))
    with pytest.raises(ValueError, match="baseline: expected one of"):
        faithfulness.insertion_deletion(pixel_sum, images, jnp.zeros((1, 8, 8)), baseline="grey")


def test_a_paired_comparison_matches_the_normal_theory_on_a_large_sample():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 400)
    b = a + rng.normal(0.1, 1.0, 400)  # shared cases: only the differences' spread counts
    c = paired.paired_comparison(a, b)
    d = b - a
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))  # the t-interval's half width at n = 400
    assert c.difference == pytest.approx(d.mean(), abs=1e-12)
    assert c.low == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert c.high == pytest.approx(d.mean() + half, abs=0.1 * half)
    assert (c.wins, c.losses) == (int((d > 0).sum()), int((d < 0).sum()))
    # The sign test is the exact binomial test of wins against losses at 1/2.
    tail = sum(math.comb(c.n, k) for k in range(max(c.wins, c.losses), c.n + 1)) / 2**c.n
    assert c.sign_p == pytest.approx(min(1.0, 2 * tail), rel=1e-9)


def test_a_paired_comparison_of_ties_and_bad_inputs():
    same = np.array([0.1, 0.5, 0.5, np.nan])
    c = paired.paired_comparison(same, same)
    assert (c.n, c.dropped, c.difference, c.low, c.high, c.sign_p) == (3, 1, 0, 0, 0, 1.0)
    with pytest.raises(ValueError, match=r"a, b: expected two 1-D arrays .* got shapes \(3,\)"):
        paired.paired_comparison(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="a, b: expected at least 2 pairs of finite values; got 1"):
        paired.paired_comparison(np.array([1.0, np.nan]), np.array([2.0, 3.0]))
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\); got 95"):
        paired.paired_comparison(np.zeros(3), np.ones(3), confidence=95)
    table = paired.paired_markdown(
        {"instances marked": paired.paired_comparison(np.zeros(3), np.ones(3))}, ("iba", "inv")
    )
    assert table.splitlines()[0].startswith("| comparison | n | iba | inv | inv − iba (95 % CI)")
    assert table.splitlines()[2] == (
        "| instances marked | 3 | 0.000 | 1.000 | +1.000 (+1.000, +1.000) | 3 / 0 | 0.25 |"
    )


def test_mean_interval_is_students_t_over_the_finite_values():
    from iba_jax.metrics.intervals import mean_interval

    values = np.array([0.2, 0.5, np.nan, 0.4, 0.9, 0.1])
    finite = values[np.isfinite(values)]
    stat = mean_interval(values)
    expected = scipy.stats.t.interval(
        0.95, len(finite) - 1, loc=finite.mean(), scale=scipy.stats.sem(finite)
    )
    assert stat.n == 5 and stat.mean == pytest.approx(finite.mean())
    assert (stat.low, stat.high) == pytest.approx(expected)
    wider = mean_interval(values, confidence=0.99)
    assert wider.low < stat.low and wider.high > stat.high
    assert np.isnan(mean_interval([0.3]).low) and mean_interval([0.3]).mean == 0.3
    assert mean_interval([np.nan]).n == 0
    with pytest.raises(ValueError, match="confidence: expected a share in"):
        mean_interval(values, confidence=95)
