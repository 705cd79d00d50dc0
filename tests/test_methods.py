"""The method registry: every method's maps, batching, and what each method needs."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from iba_jax import methods, sharding
from iba_jax.attribute import IBAConfig, iba, inverse_iba
from iba_jax.diagnostics import FlatLambdaWarning
from iba_jax.models import DenseNet, densenet_tiny
from iba_jax.stats import estimate_feature_stats

NET = DenseNet(densenet_tiny(in_channels=1))
QUICK = methods.MethodSettings(iba=IBAConfig(steps=2, samples=1), unroll=False, ig_steps=4)


def method_inputs():
    """Variables, two images and every method's statistics (also used by test_sharding)."""
    variables = NET.init(jax.random.key(0), 64)
    images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 1))
    stats = {
        layer: estimate_feature_stats(NET, variables, [images], layer)
        for layer in NET.standard_layers.multilayer
    }
    return variables, images, stats


def every_method(name, setting, **kw):
    """Method ``name``'s maps of the two images (also sharded by test_sharding)."""
    variables, images, stats = setting
    return methods.attribution_maps(
        name,
        NET,
        variables,
        stats,
        images,
        [0, 2],
        key=jax.random.key(2),
        settings=QUICK,
        labels=[1.0, 2.0],
        **kw,
    )


@pytest.fixture(scope="module")
def setting():
    return method_inputs()


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_gives_one_finite_map_per_image(setting, name):
    maps = every_method(name, setting)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and np.ptp(maps) > 0


@pytest.mark.parametrize("name", ["gradients", "lrp", "grad_cam"])
def test_a_batch_equals_one_image_at_a_time(setting, name):
    variables, images, stats = setting
    run = lambda x, t: methods.attribution_maps(
        name, NET, variables, stats, x, t, key=jax.random.key(0), settings=QUICK
    )
    both = run(images, [0, 2])
    for i, target in enumerate((0, 2)):
        np.testing.assert_allclose(
            both[i], run(images[i : i + 1], [target])[0], rtol=1e-4, atol=1e-7
        )


def test_what_a_method_needs_is_named(setting):
    variables, images, stats = setting
    call = lambda name, **kw: methods.attribution_maps(
        name, NET, variables, kw.pop("stats", stats), images, [0, 1], key=jax.random.key(0), **kw
    )
    with pytest.raises(ValueError, match="method: expected one of"):
        call("lime")
    with pytest.raises(ValueError, match=r"stats: multilayer_iba needs .*denseblock1"):
        call("multilayer_iba", stats={"denseblock3": stats["denseblock3"]})
    with pytest.raises(ValueError, match="labels: regression_iba_mse needs"):
        call("regression_iba_mse")
    with pytest.raises(ValueError, match="lrp_rule"):
        methods.MethodSettings(lrp_rule="gamma")
    assert methods.needed_layers(["iba", "gradients"]) == ("denseblock3",)
    assert methods.needed_layers(["multilayer_iba"]) == tuple(f"denseblock{i}" for i in (1, 2, 3))
    with pytest.raises(ValueError, match=r"betas: expected one of 'iba', .*; got 'inverse'"):
        methods.MethodSettings(betas=(("inverse", 30.0),))
    with pytest.raises(ValueError, match=r"betas: expected a finite float β > 0 for iba; got 0.0"):
        methods.MethodSettings(betas=(("iba", 0.0),))
    with pytest.raises(ValueError, match="betas: expected each method once"):
        methods.MethodSettings(betas=(("iba", 1.0), ("iba", 2.0)))


def test_the_layer_and_each_methods_beta_are_settings(setting):
    """``iba_layer`` moves the single-layer methods' bottleneck; ``betas`` replaces β for the
    methods named (here the reference code's Inverse IBA) and no other."""
    variables, images, stats = setting
    settings = methods.MethodSettings(
        iba=QUICK.iba, iba_layer="denseblock2", betas=methods.REFERENCE_BETAS, unroll=False
    )
    assert methods.needed_layers(["iba", "inverse_iba"], settings) == ("denseblock2",)
    assert settings.config_for("inverse_iba").beta == 30.0 and settings.config_for("iba").beta == 10
    key = jax.random.key(2)
    for name, fn, beta in (("iba", iba, 10.0), ("inverse_iba", inverse_iba, 30.0)):
        maps = methods.attribution_maps(
            name, NET, variables, stats, images, [0, 2], key=key, settings=settings
        )
        config = IBAConfig(beta=beta, steps=2, samples=1)
        direct, _ = fn(
            NET,
            variables,
            stats["denseblock2"],
            images,
            [0, 2],
            layer="denseblock2",
            config=config,
            unroll=False,
            key=key,
        )
        np.testing.assert_allclose(maps, direct, rtol=1e-5, atol=1e-7, err_msg=name)
    with pytest.raises(ValueError, match=r"stats: iba needs the feature statistics of \['norm5'\]"):
        methods.attribution_maps(
            "iba",
            NET,
            variables,
            stats,
            images,
            [0, 2],
            key=key,
            settings=methods.MethodSettings(iba_layer="norm5"),
        )


def test_how_the_loop_runs_is_not_a_setting_that_determines_the_maps(setting):
    """unroll and images_per_call change time and memory, not the maps: they are left out of
    what evaluate and explain record and compare on resuming; a wrong value is refused."""
    variables, images, stats = setting
    unrolled = dataclasses.replace(QUICK, unroll=True, images_per_call=1)
    assert unrolled.determining() == QUICK.determining()
    assert "unroll" not in json.dumps(QUICK.determining())
    assert QUICK.determining() != dataclasses.replace(QUICK, ig_steps=8).determining()
    run = lambda settings: methods.attribution_maps(
        "iba", NET, variables, stats, images, [0, 2], key=jax.random.key(4), settings=settings
    )
    np.testing.assert_allclose(run(unrolled), run(QUICK), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="images_per_call: expected a positive integer"):
        dataclasses.replace(QUICK, images_per_call=0)


@pytest.mark.parametrize("name", ["iba", "multilayer_iba", "random"])
def test_one_key_per_image_makes_maps_independent_of_batching(setting, name):
    variables, images, stats = setting
    keys = jax.numpy.stack([jax.random.key(5), jax.random.key(6)])
    run = lambda x, t, k: methods.attribution_maps(
        name, NET, variables, stats, x, t, key=k, settings=QUICK
    )
    both = run(images, [0, 2], keys)
    for i, target in enumerate((0, 2)):
        alone = run(images[i : i + 1], [target], keys[i : i + 1])[0]
        np.testing.assert_allclose(both[i], alone, rtol=1e-4, atol=1e-6)


def test_a_flat_lambda_warns_in_the_sharded_path_too(setting):
    """The tiny random model's λ ends flat; sharded, the program is traced, and a host
    callback warns when it runs."""
    with pytest.warns(FlatLambdaWarning, match=r"flat λ at 'denseblock3' in 2 of 2 images"):
        every_method("iba", setting, mesh=sharding.local_mesh())
        jax.effects_barrier()
