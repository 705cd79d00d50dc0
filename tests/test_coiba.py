"""CoIBA-style shared bottleneck."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iba_jax.attribute import IBAConfig
from iba_jax.bottleneck import inverse_bottleneck, standard_normal
from iba_jax.coiba import area_downsample, coiba
from iba_jax.inputs import layer_draws
from iba_jax.stats import estimate_feature_stats

LAYERS = ("denseblock1", "denseblock2", "denseblock3")


@pytest.fixture(scope="module")
def setup(tiny_model):
    net, variables = tiny_model
    data = jax.random.normal(jax.random.key(8), (48, 64, 64, 3))
    stats = estimate_feature_stats(net, variables, [data[:24], data[24:]], LAYERS)
    return net, variables, stats, jax.random.normal(jax.random.key(9), (2, 64, 64, 3))


def test_area_downsample_averages_blocks():
    lam = np.arange(16.0).reshape(4, 4, 1)
    np.testing.assert_allclose(area_downsample(lam, (2, 2))[..., 0], [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(ValueError, match="cannot be area-averaged to 3x3"):
        area_downsample(lam, (3, 3))


def test_coiba_is_deterministic_and_beta_controls_the_bits(setup):
    net, variables, stats, images = setup
    key = jax.random.key(0)
    totals = []
    for beta in (0.01, 10.0):
        cfg = IBAConfig(beta=beta, return_capacity=True)
        maps, aux = coiba(net, variables, stats, images, 1, config=cfg, unroll=False, key=key)
        assert maps.shape == (2, 64, 64) and np.all(np.isfinite(maps))
        assert aux.lam.shape == (2, 16, 16, 1) and aux.capacity.shape == (2, 16, 16, 32)
        totals.append(float(maps.sum()))
    again, _ = coiba(net, variables, stats, images, 1, config=cfg, unroll=False, key=key)
    np.testing.assert_array_equal(again, maps)
    assert totals[0] > totals[1]


def test_the_later_bottlenecks_change_the_optimisation(setup):
    net, variables, stats, images = setup
    cfg, key = IBAConfig(beta=0.01), jax.random.key(1)
    shared, aux = coiba(net, variables, stats, images, 1, config=cfg, unroll=False, key=key)
    first_only, aux1 = coiba(
        net, variables, stats, images, 1, layers=LAYERS[:1], config=cfg, unroll=False, key=key
    )
    # Same first-layer KL formula, but noise at the later layers changes the model term.
    assert not np.allclose(aux.model_loss, aux1.model_loss)
    assert not np.allclose(shared, first_only)


def test_bad_layers(setup):
    net, variables, stats, images = setup
    with pytest.raises(ValueError, match="layers: expected distinct layers in network order"):
        coiba(net, variables, stats, images, 1, layers=LAYERS[::-1], key=jax.random.key(0))
    with pytest.raises(ValueError, match="missing"):
        coiba(
            net, variables, stats, images, 1, layers=("pool0", "denseblock3"), key=jax.random.key(0)
        )


def twice_the_mean_capacity(cap):
    return 2.0 * jnp.mean(cap)


def test_coiba_is_built_from_the_pluggable_pieces(setup):
    net, variables, stats, images = setup
    key = jax.random.key(2)
    run = lambda beta, **kw: coiba(
        net,
        variables,
        stats,
        images,
        1,
        config=IBAConfig(beta=beta, steps=3, samples=2),
        unroll=False,
        key=key,
        **kw,
    )
    plain, aux = run(0.1)
    doubled, doubled_aux = run(0.05, information=twice_the_mean_capacity)
    np.testing.assert_allclose(doubled, plain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(doubled_aux.information_loss, 2 * aux.information_loss, rtol=1e-5)
    _, frozen = run(0.1, optimizer=optax.sgd(0.0))
    np.testing.assert_array_equal(frozen.alpha, 5.0)
    # At β = 0.1 Adam's sign-like first steps follow the information term alone; at 0.001 the
    # model term (through the bottleneck form) decides.
    forward, _ = run(0.001)
    inverse, _ = run(0.001, bottleneck=inverse_bottleneck)
    assert np.all(np.isfinite(inverse)) and not np.allclose(inverse, forward, rtol=1e-3)


def test_coiba_runs_under_a_callers_jit_with_the_same_maps(setup):
    net, variables, stats, images = setup
    cfg = IBAConfig(steps=2, samples=1, beta=0.1)
    maps = lambda x: coiba(
        net, variables, stats, x, 0, config=cfg, unroll=False, key=jax.random.key(3)
    )[0]
    np.testing.assert_allclose(jax.jit(maps)(images), maps(images), rtol=1e-5, atol=1e-8)


def test_recorded_noise_replays_the_keyed_run(setup):
    net, variables, stats, images = setup
    cfg, key = IBAConfig(steps=2, samples=3, beta=0.1), jax.random.key(4)
    keyed, keyed_aux = coiba(net, variables, stats, images, 1, config=cfg, unroll=False, key=key)
    # The normals the keys draw: per image and step, the key split into one per layer.
    shapes = {layer: stats[layer].mean.shape for layer in LAYERS}
    steps = layer_draws(key, None, len(images), cfg.steps)  # (images, steps) keys
    noise = {
        layer: jax.vmap(
            jax.vmap(
                lambda k, i=i, layer=layer: standard_normal(
                    jax.random.split(k, len(LAYERS))[i], (cfg.samples, *shapes[layer])
                )
            )
        )(steps)
        for i, layer in enumerate(LAYERS)
    }
    run = lambda noise: coiba(
        net, variables, stats, images, 1, config=cfg, unroll=False, noise=noise
    )
    replayed, aux = run(noise)
    np.testing.assert_allclose(replayed, keyed, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(aux.model_loss, keyed_aux.model_loss, rtol=1e-5)
    # Other noise, another model term from the first step (λ ≈ 0.993 lets little noise in).
    _, other = run({layer: n[:, ::-1] for layer, n in noise.items()})
    assert not np.allclose(other.model_loss, keyed_aux.model_loss, rtol=1e-5)  # ~1e-4 apart
    with pytest.raises(
        ValueError, match=r"noise: expected standard-normal draws .* at 'denseblock2'"
    ):
        short = {**noise, "denseblock2": noise["denseblock2"][:, :1]}
        coiba(net, variables, stats, images, 1, config=cfg, unroll=False, noise=short)
    with pytest.raises(ValueError, match=r"noise: expected standard normals for every layer"):
        coiba(
            net,
            variables,
            stats,
            images,
            1,
            config=cfg,
            noise={"denseblock1": noise["denseblock1"]},
        )
