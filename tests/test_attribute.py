"""The attribution loop: end to end against the reference, analytic cases, transformations."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import channels_last

from iba_jax.attribute import (
    IBAConfig,
    attribute,
    call_in_chunks,
    iba,
    inverse_iba,
    multilayer_iba,
    regression_iba,
)
from iba_jax.bottleneck import capacity, iba_bottleneck, inverse_bottleneck, mean_capacity
from iba_jax.inputs import layer_keys
from iba_jax.loop import compiled_attribution
from iba_jax.maps import binarize
from iba_jax.objectives import (
    CleanPrediction,
    Negated,
    SquaredError,
    class_index_loss,
    target_bce,
)
from iba_jax.optim import adam
from iba_jax.stats import FeatureStats, estimate_feature_stats

# (fixture prefix, method); each run replays the reference's recorded noise.
RUNS = {
    "": lambda m, v, s, x, **k: iba(m, v, s, x, 1, **k),
    "inverse/": lambda m, v, s, x, **k: inverse_iba(m, v, s, x, 1, **k),
    "regression_mse/": lambda m, v, s, x, **k: regression_iba(m, v, s, x, 2.0, **k),
    "beta0.01/bce/": lambda m, v, s, x, **k: iba(m, v, s, x, 1, **k),
    "beta0.01/inverse/": lambda m, v, s, x, **k: inverse_iba(m, v, s, x, 1, **k),
    "beta0.01/regression_mse/": lambda m, v, s, x, **k: regression_iba(m, v, s, x, 2.0, **k),
}


def replay(
    run, tiny_model, reference_stats, iba_reference, pool_before_conv=True, unroll=True, **config
):
    net, variables = tiny_model
    net = dataclasses.replace(net, pool_before_conv=pool_before_conv)
    beta = float(iba_reference[run + "meta/beta"])
    noise = channels_last(iba_reference[run + "noise"])[None]
    x0 = channels_last(iba_reference["x0"])
    cfg = IBAConfig(beta=beta, return_capacity=True, **config)
    return RUNS[run](net, variables, reference_stats, x0, noise=noise, config=cfg, unroll=unroll)


# Every run in torchvision's order of operations, with a rolled loop; the β = 10 runs also as
# DenseNet's default computes them (transitions pool before their convolution), with the
# default unrolled loop, so that both loop forms meet the reference. At β = 0.01 most gradients are
# ~1e-6, Adam scales them to full steps, and the rounding of that reordering alone moves 100 of
# 512 α of the Inverse IBA run by up to 0.044 (its map by 2e-3 of its range): the reference's
# own result there is only defined up to rounding.
CASES = [(run, False) for run in RUNS] + [(run, True) for run in RUNS if "beta0.01" not in run]


@pytest.mark.parametrize(("run", "pool_before_conv"), CASES)
def test_end_to_end_against_the_reference(
    run, pool_before_conv, tiny_model, reference_stats, iba_reference
):
    maps, aux = replay(
        run, tiny_model, reference_stats, iba_reference, pool_before_conv, unroll=pool_before_conv
    )
    expected = iba_reference[run + "saliency"]
    span = expected.max() - expected.min()
    # Measured: <= 6.5e-5 of the map's range at β = 10, <= 1.5e-5 at β = 0.01.
    assert np.abs(maps[0] - expected).max() <= 1e-4 * span
    np.testing.assert_allclose(
        aux.loss[0],
        iba_reference[run + "loss"],
        rtol=1e-4,
        atol=1e-5 * np.abs(iba_reference[run + "loss"]).max(),
    )
    alpha = channels_last(iba_reference[run + "alpha_final"])
    capacity = channels_last(iba_reference[run + "capacity_last_mean"])
    if run.startswith("beta0.01"):
        # Near-zero gradients let a few α take another Adam path under rounding (fixtures' README).
        assert np.corrcoef(aux.alpha[0].ravel(), alpha.ravel())[0, 1] > 0.9999
        np.testing.assert_allclose(aux.capacity[0], capacity, atol=1e-3)
    else:
        np.testing.assert_allclose(aux.alpha[0], alpha, atol=1e-4)
        np.testing.assert_allclose(aux.capacity[0], capacity, atol=1e-6)


def test_final_readout_uses_the_last_lambda(tiny_model, reference_stats, iba_reference):
    rolled = {"pool_before_conv": False, "unroll": False}  # a program of the test above
    _, last = replay("beta0.01/bce/", tiny_model, reference_stats, iba_reference, **rolled)
    _, final = replay(
        "beta0.01/bce/", tiny_model, reference_stats, iba_reference, readout="final", **rolled
    )
    np.testing.assert_array_equal(final.alpha, last.alpha)
    assert np.abs(final.capacity - last.capacity).max() > 1e-3


# Where neither the loop's form nor its length is the subject (the paper's settings, in both
# loop forms, meet the reference above): a short rolled loop. It compiles in a fraction of the
# unrolled loop's time, and at the tests' LLVM level 0 (conftest.py) each step of a rolled
# loop runs several times slower than at the default level, so the steps are few.
QUICK = IBAConfig(steps=3, samples=2)


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(7), (4, 64, 64, 3))


@pytest.fixture(scope="module")
def stats(tiny_model):
    net, variables = tiny_model
    data = jax.random.normal(jax.random.key(8), (64, 64, 64, 3))
    layers = ("denseblock1", "denseblock2", "denseblock3")
    return estimate_feature_stats(net, variables, [data[:32], data[32:]], layers)


def test_a_feature_the_tail_ignores_ends_with_no_capacity(tiny_model, stats, images):
    net, variables = tiny_model
    ignored = 5  # transition3 reads denseblock3's channels through its 1x1 conv only
    params = jax.tree.map(lambda a: a, variables)
    kernel = params["params"]["transition3"]["conv"]["kernel"]
    params["params"]["transition3"]["conv"]["kernel"] = kernel.at[:, :, ignored, :].set(0.0)
    cfg = IBAConfig(beta=0.1, steps=15, return_capacity=True)
    _, aux = iba(
        net,
        params,
        stats["denseblock3"],
        images,
        0,
        config=cfg,
        unroll=False,
        key=jax.random.key(0),
    )
    s = stats["denseblock3"]
    features = net.encode(variables, images, "denseblock3")
    r = (features - s.mean[None]) / jnp.maximum(s.std, 0.01)[None]
    initial = capacity(r, jax.nn.sigmoid(cfg.initial_alpha))[..., ignored].mean()
    per_channel = aux.capacity.mean(axis=(0, 1, 2))
    assert per_channel[ignored] < 1e-3 * initial
    assert per_channel[ignored] <= np.median(np.asarray(per_channel))
    assert float(aux.lam[..., ignored].max()) < 0.01


def test_total_bits_fall_as_beta_grows_without_recompiling(tiny_model, stats, images):
    net, variables = tiny_model
    key = jax.random.key(1)
    once = chex.assert_max_traces(target_bce, n=1)  # fails if the loop is traced again
    totals = []
    for beta in (0.001, 0.1, 10.0):
        maps, _ = iba(
            net,
            variables,
            stats["denseblock3"],
            images,
            0,
            model_loss=once,
            config=IBAConfig(beta=beta),
            unroll=False,
            key=key,
        )
        totals.append(float(maps.sum()))
    assert totals[0] > totals[1] > totals[2]


def test_same_key_same_map_and_no_retrace(tiny_model, stats, images):
    net, variables = tiny_model
    once = chex.assert_max_traces(target_bce, n=1)  # fails if the loop is traced again
    run = lambda key, x=images: iba(
        net,
        variables,
        stats["denseblock3"],
        x,
        2,
        model_loss=once,
        config=QUICK,
        unroll=False,
        key=key,
    )[0]
    a = run(jax.random.key(3))
    b = run(jax.random.key(3))
    c = run(jax.random.key(4), images * 0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_vmap_over_images_equals_single_calls(tiny_model, stats, images):
    net, variables = tiny_model
    keys = jax.random.split(jax.random.key(5), 4)
    targets = jnp.array([0, 1, 2, 1])
    batched, aux = iba(
        net, variables, stats["denseblock3"], images, targets, config=QUICK, unroll=False, key=keys
    )
    for i in range(4):
        one = (images[i : i + 1], targets[i])
        single, single_aux = iba(
            net,
            variables,
            stats["denseblock3"],
            *one,
            config=QUICK,
            unroll=False,
            key=keys[i : i + 1],
        )
        np.testing.assert_allclose(single[0], batched[i], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(single_aux.loss[0], aux.loss[i], rtol=1e-5)


def test_jit_equals_no_jit(tiny_model, stats, images):
    net, variables = tiny_model
    cfg = IBAConfig(steps=2, samples=2)
    run = lambda: iba(
        net,
        variables,
        stats["denseblock3"],
        images[:1],
        0,
        config=cfg,
        unroll=False,
        key=jax.random.key(6),
    )[0]
    compiled = run()
    with jax.disable_jit():
        eager = run()
    np.testing.assert_allclose(eager, compiled, rtol=1e-4, atol=1e-4 * float(compiled.max()))


def test_a_composed_objective_is_what_the_loop_optimises(tiny_model, stats, images):
    net, variables = tiny_model
    cfg = IBAConfig(steps=3, samples=2, beta=0.01)  # the model term matters
    two_findings = lambda logits, target: target_bce(logits, 2) + 0.5 * target_bce(logits, 1)
    key, st3 = jax.random.key(9), stats["denseblock3"]
    composed, aux = attribute(
        net, variables, st3, images, 0, model_loss=two_findings, config=cfg, unroll=False, key=key
    )
    # Step 0 evaluates λ = sigmoid(α₀ = 5) ≈ 0.993, nearly the clean features: its model term
    # is the composed loss of the clean logits.
    logits = net.apply(variables, images)
    expected = target_bce(logits, 2) + 0.5 * target_bce(logits, 1)
    np.testing.assert_allclose(aux.model_loss[:, 0], expected, rtol=2e-3)
    plain, _ = iba(net, variables, st3, images, 2, config=cfg, unroll=False, key=key)
    assert not np.allclose(composed, plain, rtol=1e-2)  # the second term moves the maps
    alone = lambda logits, target: target_bce(logits, 2)  # the first term alone is IBA
    first, _ = attribute(
        net, variables, st3, images, 0, model_loss=alone, config=cfg, unroll=False, key=key
    )
    np.testing.assert_allclose(first, plain, rtol=1e-5, atol=1e-8)


def test_inverse_iba_differs_from_iba(tiny_model, stats, images):
    net, variables = tiny_model
    cfg = IBAConfig(beta=0.01)
    key = jax.random.key(10)
    forward, _ = iba(
        net, variables, stats["denseblock3"], images, 0, config=cfg, unroll=False, key=key
    )
    inverse, _ = inverse_iba(
        net, variables, stats["denseblock3"], images, 0, config=cfg, unroll=False, key=key
    )
    assert np.all(np.isfinite(inverse))
    assert not np.allclose(forward, inverse, rtol=1e-2)


def test_regression_losses(tiny_model, stats, images):
    net, variables = tiny_model
    st3 = stats["denseblock3"]
    key = jax.random.key(11)
    clean = net.apply(variables, images)[:, 1]
    quick = {"output": 1, "key": key, "config": QUICK, "unroll": False}
    deviation, _ = regression_iba(net, variables, st3, images, loss="deviation", **quick)
    mse_to_clean, _ = regression_iba(net, variables, st3, images, clean, **quick)
    np.testing.assert_allclose(deviation, mse_to_clean, rtol=1e-4, atol=1e-8)
    rm, _ = regression_iba(net, variables, st3, images, loss="rm", **quick)
    assert rm.shape == (4, 64, 64) and np.all(np.isfinite(rm))
    # RM maximises the score: its model term −Φ(Z)² starts at the clean score's (λ ≈ 0.993)
    # and falls in every image when β leaves room.
    cfg = IBAConfig(steps=10, samples=2, beta=0.01)
    _, aux = regression_iba(
        net, variables, st3, images, loss="rm", output=1, key=key, config=cfg, unroll=False
    )
    np.testing.assert_allclose(aux.model_loss[:, 0], -(clean**2), rtol=1e-2)
    assert np.all(aux.model_loss[:, -1] < aux.model_loss[:, 0])
    # A new but equal model object (every bundle.model is one) reuses each loss's program:
    # the losses hold the head as a module-level function, not as a method of the object.
    again = dataclasses.replace(net)
    for loss, targets in (("deviation", None), ("mse", clean), ("rm", None)):
        chex.clear_trace_counter()  # one count per loss (chex counts by where it wraps)
        once = {"information": chex.assert_max_traces(mean_capacity, n=1), **quick}
        first = regression_iba(net, variables, st3, images, targets, loss=loss, **once)[0]
        second = regression_iba(again, variables, st3, images, targets, loss=loss, **once)[0]
        np.testing.assert_array_equal(second, first)


@pytest.fixture(scope="module")
def multilayer_noise(stats):
    layers = ("denseblock1", "denseblock2", "denseblock3")
    steps, samples = QUICK.steps, QUICK.samples
    return {
        layer: jax.random.normal(jax.random.key(i), (4, steps, samples, *stats[layer].mean.shape))
        for i, layer in enumerate(layers)
    }


def test_multilayer_layer_maps_are_the_single_layer_maps(
    tiny_model, stats, images, multilayer_noise
):
    net, variables = tiny_model
    result = multilayer_iba(
        net, variables, stats, images, 1, config=QUICK, unroll=False, noise=multilayer_noise
    )
    for layer, noise in multilayer_noise.items():
        single, _ = iba(
            net,
            variables,
            stats[layer],
            images,
            1,
            layer=layer,
            config=QUICK,
            unroll=False,
            noise=noise,
        )
        np.testing.assert_allclose(result.layer_maps[layer], single, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("rule", ["l2", "percentile", "otsu"])
def test_multilayer_iba_gates_the_finest_map(tiny_model, stats, images, multilayer_noise, rule):
    net, variables = tiny_model
    result = multilayer_iba(
        net,
        variables,
        stats,
        images,
        1,
        rule=rule,
        config=QUICK,
        unroll=False,
        noise=multilayer_noise,
    )
    maps = result.layer_maps
    mask = binarize(maps["denseblock2"], rule) & binarize(maps["denseblock3"], rule)
    np.testing.assert_array_equal(result.mask, mask)
    np.testing.assert_array_equal(result.map, np.where(mask, maps["denseblock1"], 0))
    assert 0 < int(mask.sum()) < mask.size


def test_multilayer_bad_layers(tiny_model, stats, images):
    net, variables = tiny_model
    with pytest.raises(ValueError, match="layers: expected distinct layers in network order"):
        multilayer_iba(
            net,
            variables,
            stats,
            images,
            1,
            layers=("denseblock3", "denseblock1"),
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match=r"missing \['transition1'\]"):
        multilayer_iba(
            net,
            variables,
            stats,
            images,
            1,
            layers=("transition1", "denseblock3"),
            key=jax.random.key(0),
        )


# --------------------------------------------------------------------------- bad input


def test_stats_of_another_layer_are_refused(tiny_model, stats, images):
    net, variables = tiny_model
    with pytest.raises(
        ValueError,
        match=r"stats: expected statistics of the 'denseblock3' feature shape \(4, 4, 32\)",
    ):
        iba(net, variables, stats["denseblock2"], images, 0, key=jax.random.key(0))


def test_targets_out_of_range_are_refused(tiny_model, stats, images):
    net, variables = tiny_model
    with pytest.raises(
        ValueError,
        match=r"targets: expected an index in \[0, 3\) \(the model.s outputs\); got \[0, 3, 1, 1\]",
    ):
        iba(net, variables, stats["denseblock3"], images, [0, 3, 1, 1], key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"targets: expected one target per image \(4\)"):
        iba(net, variables, stats["denseblock3"], images, [0, 1], key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"targets: expected integer class indices; got float"):
        iba(net, variables, stats["denseblock3"], images, 1.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"images: expected a batch of images of shape \(N, H, W"):
        iba(net, variables, stats["denseblock3"], images[0], 0, key=jax.random.key(0))


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int32, bool])
def test_integer_images_are_refused(tiny_model, stats, images, dtype):
    """Stored uint8 pixels given as they are would reach the model 255 times too bright."""
    net, variables = tiny_model
    stored = np.round(np.clip(np.asarray(images), 0, 1) * 255).astype(dtype)
    expected = f"images: expected floating-point pixels, normalised as .*; got {np.dtype(dtype)}"
    with pytest.raises(ValueError, match=expected):
        iba(net, variables, stats["denseblock3"], stored, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match=expected.replace("images", "x")):
        net.apply(variables, stored)


def test_an_objective_past_the_outputs_is_refused(tiny_model, stats, images):
    """The README's custom objective on a model with too few outputs: jnp.take would read NaN
    (which passes no gradient) and x[..., K] the last output, both silently."""
    net, variables = tiny_model  # 3 outputs

    def two_findings(logits, target):
        del target
        return 0.7 * target_bce(logits, 1) + 0.3 * target_bce(logits, 3)

    with pytest.raises(
        ValueError, match=r"target: expected an index in \[0, 3\) \(the model's outputs\); got 3"
    ):
        attribute(
            net,
            variables,
            stats["denseblock3"],
            images,
            0,
            model_loss=two_findings,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match=r"output: expected an index in \[0, 3\)"):
        attribute(
            net,
            variables,
            stats["denseblock3"],
            images,
            0,
            model_loss=SquaredError(output=3),
            key=jax.random.key(0),
        )


def test_a_non_finite_loss_stops_the_attribution(tiny_model, stats, images):
    net, variables = tiny_model

    def blows_up(logits, target):
        # The index is traced in the loop (one target per image), so it cannot be checked
        # before the run; jnp.take reads NaN past the end and passes no gradient, so α would
        # follow the information term alone to a finite, plausible map.
        return target_bce(logits, target + 3)

    with pytest.raises(
        FloatingPointError,
        match=r"model_loss: expected a finite loss; got nan at step 0 of image 0",
    ):
        attribute(
            net,
            variables,
            stats["denseblock3"],
            images,
            0,
            model_loss=blows_up,
            config=QUICK,
            unroll=False,
            key=jax.random.key(0),
        )
    # Under a caller's jit nothing can raise: the maps are NaN, not a plausible picture.
    traced = jax.jit(
        lambda x: attribute(
            net,
            variables,
            stats["denseblock3"],
            x,
            0,
            model_loss=blows_up,
            config=QUICK,
            unroll=False,
            key=jax.random.key(0),
        )[0]
    )
    assert np.all(np.isnan(traced(images)))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("beta", -1.0, "beta: expected a finite value >= 0"),
        ("steps", 0, "steps: expected a positive integer"),
        ("samples", 0, "samples"),
        ("learning_rate", 0.0, "learning_rate"),
        ("readout", "best", "readout"),
    ],
)
def test_bad_config_is_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(IBAConfig(), **{field: value})


def test_non_finite_images_are_refused(tiny_model, stats, images):
    net, variables = tiny_model
    bad = images.at[0, 3, 3, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="images: expected finite values; got 1 NaN or infinite"):
        iba(net, variables, stats["denseblock3"], bad, 0, key=jax.random.key(0))


def test_unknown_layer_and_missing_key_and_bad_noise(tiny_model, stats, images):
    net, variables = tiny_model
    with pytest.raises(ValueError, match="layer: expected one of"):
        iba(net, variables, stats["denseblock3"], images, 0, layer="block3", key=jax.random.key(0))
    with pytest.raises(ValueError, match="key: expected a PRNG key"):
        iba(net, variables, stats["denseblock3"], images, 0)
    with pytest.raises(ValueError, match=r"noise: expected standard-normal draws of shape"):
        iba(net, variables, stats["denseblock3"], images, 0, noise=np.zeros((4, 10, 10, 4, 4, 16)))
    with pytest.raises(ValueError, match="loss: expected one of"):
        regression_iba(
            net, variables, stats["denseblock3"], images, 1.0, loss="mae", key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="targets: the 'mse' loss needs a target"):
        regression_iba(net, variables, stats["denseblock3"], images, key=jax.random.key(0))


def test_dead_channels_give_finite_maps(tiny_model, stats, images):
    """Documented behaviour: std 0 is clamped to min_std; never-active elements are masked out."""
    net, variables = tiny_model
    s = stats["denseblock3"]
    dead = FeatureStats(
        s.mean, s.std.at[..., :4].set(0.0), s.active.at[..., 4:8].set(False), s.count
    )
    maps, aux = iba(
        net,
        variables,
        dead,
        images,
        0,
        config=IBAConfig(return_capacity=True),
        unroll=False,
        key=jax.random.key(0),
    )
    assert np.all(np.isfinite(maps))
    np.testing.assert_array_equal(aux.capacity[..., 4:8], 0.0)


def test_chunks_of_images_equal_one_call(tiny_model, stats, images):
    net, variables = tiny_model
    key = jax.random.key(12)
    whole, aux = iba(
        net, variables, stats["denseblock3"], images, 1, config=QUICK, unroll=False, key=key
    )
    chunked, chunked_aux = iba(
        net,
        variables,
        stats["denseblock3"],
        images,
        1,
        config=QUICK,
        unroll=False,
        images_per_call=3,
        key=key,
    )
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(chunked_aux.loss, aux.loss, rtol=1e-5)
    for wrong in (0, 2.5, "many"):
        with pytest.raises(
            ValueError, match=r"images_per_call: expected a positive integer, 'auto' or None"
        ):
            iba(net, variables, stats["denseblock3"], images, 1, images_per_call=wrong, key=key)
    with pytest.raises(ValueError, match="unroll: expected True or False; got 'no'"):
        iba(net, variables, stats["denseblock3"], images, 1, unroll="no", key=key)


def test_a_loss_marked_as_taking_a_class_index_gets_its_targets_checked(tiny_model, stats, images):
    net, variables = tiny_model
    margin = lambda logits, target: -jnp.take(logits, target, axis=-1)
    marked = class_index_loss(lambda logits, target: margin(logits, target))
    run = lambda loss, targets: attribute(
        net,
        variables,
        stats["denseblock3"],
        images,
        targets,
        model_loss=loss,
        config=QUICK,
        unroll=False,
        key=jax.random.key(0),
    )
    with pytest.raises(ValueError, match=r"targets: expected an index in \[0, 3\)"):
        run(marked, [0, 3, 1, 1])  # jnp.take would read NaN past the outputs
    with pytest.raises(ValueError, match=r"targets: expected an index in \[0, 3\)"):
        run(Negated(marked), [0, 3, 1, 1])  # a negated loss takes what its loss takes
    np.testing.assert_array_equal(run(marked, [0, 2, 1, 1])[0], run(margin, [0, 2, 1, 1])[0])


def twice_the_mean_capacity(cap):
    return 2.0 * mean_capacity(cap)


def mean_squared_capacity(cap):
    return jnp.mean(jnp.square(cap))


def test_the_information_term_is_a_function_of_the_capacity(tiny_model, stats, images):
    net, variables = tiny_model

    def run(beta, **term):
        cfg = IBAConfig(steps=3, samples=2, beta=beta)
        st3, key = stats["denseblock3"], jax.random.key(12)
        return attribute(
            net,
            variables,
            st3,
            images,
            0,
            model_loss=target_bce,
            config=cfg,
            unroll=False,
            key=key,
            **term,
        )

    default, aux = run(0.1)
    np.testing.assert_array_equal(run(0.1, information=mean_capacity)[0], default)
    # 2·I at β/2 is the same objective: the same maps, the information term doubled.
    doubled, doubled_aux = run(0.05, information=twice_the_mean_capacity)
    np.testing.assert_allclose(doubled, default, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(doubled_aux.information_loss, 2 * aux.information_loss, rtol=1e-5)
    squared, _ = run(0.1, information=mean_squared_capacity)  # another term: other maps
    assert np.all(np.isfinite(squared)) and not np.allclose(squared, default, rtol=1e-3)
    # The named methods take the term too: the same identity through each of them.
    st3, key = stats["denseblock3"], jax.random.key(13)
    at_beta, at_half = (IBAConfig(steps=3, samples=2, beta=b) for b in (0.1, 0.05))
    twice = {"information": twice_the_mean_capacity}
    for method, given in (
        (iba, {"targets": 1}),
        (inverse_iba, {"targets": 1}),
        (regression_iba, {"loss": "rm"}),
    ):
        plain = method(net, variables, st3, images, config=at_beta, unroll=False, key=key, **given)[
            0
        ]
        doubled = method(
            net, variables, st3, images, config=at_half, unroll=False, key=key, **given, **twice
        )[0]
        np.testing.assert_allclose(doubled, plain, rtol=1e-5, atol=1e-7, err_msg=method.__name__)


def iba_rewritten(features, lam, eps):
    return eps + lam * (features - eps)  # λR + (1 − λ)ε, written another way


def signal_only(features, lam, eps):
    del lam, eps
    return features  # no bottleneck at all: Z = R whatever λ


def test_the_bottleneck_form_is_pluggable(tiny_model, stats, images):
    net, variables = tiny_model
    st3, key = stats["denseblock3"], jax.random.key(14)
    cfg = IBAConfig(steps=3, samples=2, beta=0.1)
    run = lambda form, loss=target_bce, targets=1: attribute(
        net,
        variables,
        st3,
        images,
        targets,
        model_loss=loss,
        bottleneck=form,
        config=cfg,
        unroll=False,
        key=key,
    )
    default, _ = iba(net, variables, st3, images, 1, config=cfg, unroll=False, key=key)
    np.testing.assert_allclose(run(iba_rewritten)[0], default, rtol=1e-4, atol=1e-7)
    # The form is what the loop runs: with Z = R the model term is the clean loss at every step
    # while the information term alone closes the bottleneck.
    _, aux = run(signal_only)
    clean_loss = target_bce(net.apply(variables, images), 1)
    np.testing.assert_allclose(aux.model_loss, np.repeat(clean_loss[:, None], 3, 1), rtol=1e-5)
    assert np.all(np.diff(aux.information_loss, axis=1) < 0)
    # The Deviation loss's targets come from the clean outputs: against Z = R it is exactly 0.
    deviation = SquaredError(1)
    _, aux = run(signal_only, deviation, CleanPrediction(1))
    np.testing.assert_allclose(aux.model_loss, 0.0, atol=1e-10)
    _, aux = run(iba_bottleneck, deviation, CleanPrediction(1))
    assert np.all(aux.model_loss[:, -1] > 0)  # with noise it is not


def test_the_optimizer_is_pluggable(tiny_model, stats, images):
    net, variables = tiny_model
    st3, key = stats["denseblock3"], jax.random.key(15)
    run = lambda optimizer, cfg=QUICK: iba(
        net, variables, st3, images, 1, optimizer=optimizer, config=cfg, unroll=False, key=key
    )
    default, _ = run(None)
    np.testing.assert_array_equal(run(adam(QUICK.learning_rate))[0], default)
    frozen = optax.sgd(0.0)  # α never moves from α₀
    _, still = run(frozen)
    np.testing.assert_array_equal(still.alpha, QUICK.initial_alpha)
    once = chex.assert_max_traces(mean_capacity, n=1)  # fails if the loop is traced again
    for _ in range(2):  # the same transformation object: the same program
        iba(
            net,
            variables,
            st3,
            images,
            1,
            optimizer=frozen,
            information=once,
            config=QUICK,
            unroll=False,
            key=key,
        )
    momentum, _ = run(optax.sgd(100.0, momentum=0.9))
    assert np.all(np.isfinite(momentum)) and not np.allclose(momentum, default, rtol=1e-3)
    with pytest.raises(ValueError, match=r"config\.learning_rate: unused when an optimizer"):
        run(frozen, dataclasses.replace(QUICK, learning_rate=0.5))
    with pytest.raises(ValueError, match=r"optimizer: expected an optax\.GradientTransformation"):
        run(adam)


def test_multilayer_takes_the_information_term_and_optimizer(tiny_model, stats, images):
    net, variables = tiny_model
    key = jax.random.key(16)
    run = lambda beta, **kw: multilayer_iba(
        net,
        variables,
        stats,
        images,
        0,
        config=IBAConfig(steps=3, samples=2, beta=beta),
        unroll=False,
        key=key,
        **kw,
    )
    plain = run(0.1)
    doubled = run(0.05, information=twice_the_mean_capacity)
    for layer, maps in plain.layer_maps.items():
        np.testing.assert_allclose(doubled.layer_maps[layer], maps, rtol=1e-5, atol=1e-7)
    frozen = run(0.1, optimizer=optax.sgd(0.0))
    for aux in frozen.aux.values():
        np.testing.assert_array_equal(aux.alpha, 5.0)
    # Multi-layer Inverse IBA: each layer's map is Inverse IBA's there, with that layer's key.
    inverse = run(0.1, bottleneck=inverse_bottleneck, model_loss=Negated(target_bce, 4.0))
    cfg = IBAConfig(steps=3, samples=2, beta=0.1)
    for layer, layer_key in zip(inverse.layer_maps, layer_keys(key, 3), strict=True):
        alone, _ = inverse_iba(
            net,
            variables,
            stats[layer],
            images,
            0,
            layer=layer,
            bound=4.0,
            config=cfg,
            unroll=False,
            key=layer_key,
        )
        np.testing.assert_allclose(inverse.layer_maps[layer], alone, rtol=1e-5, atol=1e-7)
        assert np.all(inverse.aux[layer].model_loss < 0) and np.all(plain.aux[layer].model_loss > 0)


def test_call_in_chunks_splits_by_any_integer_count():
    calls = []
    compiled = lambda x: calls.append(len(x)) or x * 2
    x = jnp.arange(5.0)
    for size in (2, np.int64(2)):  # a NumPy count chunks as an int does
        calls.clear()
        out = call_in_chunks(compiled, (x,), size)
        np.testing.assert_array_equal(out, x * 2)
        assert calls == [2, 2, 1]


def test_the_compiled_loop_refuses_missing_targets_without_a_target_transform(
    tiny_model, stats, images
):
    net, variables = tiny_model
    keys = jax.random.split(jax.random.key(0), (len(images), 2))  # per image, per step
    with pytest.raises(ValueError, match="targets: expected one target per image; got None"):
        compiled_attribution(
            variables,
            (stats["denseblock3"],),
            images,
            None,
            (keys,),
            IBAConfig(steps=2, samples=1),
            model=net,
            layers=("denseblock3",),
            model_loss=target_bce,
        )


def one_channel_z(features, lam, eps):
    return iba_bottleneck(features, lam, eps)[..., :1]  # broadcasts against the mask: wrong


def information_per_channel(cap):
    return jnp.mean(cap, axis=(0, 1))  # (c,), not one value


def bce_per_output(logits, target):
    del target
    return jax.nn.softplus(-logits)  # (samples, outputs), not one loss per sample


def fractional_index(clean):
    return jnp.full(clean.shape[:1], 1.5)  # a class index must be an integer


def one_target_too_many(clean):
    return jnp.concatenate([clean[:, 0], clean[:1, 0]])


def test_user_pieces_of_the_wrong_shape_are_refused_not_broadcast(tiny_model, stats, images):
    net, variables = tiny_model
    run = lambda targets=1, **piece: attribute(
        net,
        variables,
        stats["denseblock3"],
        images[:2],
        targets,
        config=QUICK,
        unroll=False,
        key=jax.random.key(0),
        **{"model_loss": target_bce, **piece},
    )
    for piece, message in (
        ({"bottleneck": one_channel_z}, r"bottleneck: expected Z of the noise's shape \(samples"),
        ({"information": information_per_channel}, r"information: expected a scalar .* got shape"),
        ({"model_loss": bce_per_output}, r"model_loss: expected one loss per sample, shape \(2,\)"),
        ({"targets": fractional_index}, "target_transform: the model loss takes class indices"),
        (
            {"targets": one_target_too_many, "model_loss": SquaredError(1)},
            r"target_transform: expected one target per image \(a leading axis of 2\)",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            run(**piece)
