"""DenseNet: torchvision parity, cut points, transformations and input errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import channels_last

from iba_jax.models import (
    DenseNet,
    DenseNetConfig,
    FunctionModel,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
    densenet_tiny,
    predict,
)
from iba_jax.models.torch_import import variables_from_state_dict

TINY = DenseNet(densenet_tiny())


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def tiny_variables():
    return TINY.init(jax.random.key(0), 64)


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (2, 64, 64, 3))


@pytest.mark.parametrize("pool_before_conv", [True, False])
def test_tiny_matches_torchvision_at_every_block(tiny_reference, tiny_state_dict, pool_before_conv):
    variables, config = variables_from_state_dict(tiny_state_dict)
    net = DenseNet(config, pool_before_conv)
    x = channels_last(tiny_reference["x"])
    np.testing.assert_allclose(net.apply(variables, x), tiny_reference["logits"], atol=1e-5)
    layers = [k.removeprefix("out/") for k in tiny_reference if k.startswith("out/")]
    assert len(layers) == 8
    outputs = net.encode(variables, x, layers)
    for layer in layers:
        np.testing.assert_allclose(
            nchw(outputs[layer]), tiny_reference[f"out/{layer}"], atol=1e-5, err_msg=layer
        )


def test_transition_order_changes_rounding_only(tiny_variables, images):
    torch_order = DenseNet(TINY.config, pool_before_conv=False)
    assert jax.tree.structure(torch_order.abstract_variables()) == jax.tree.structure(
        TINY.abstract_variables()
    )
    for layer in ("transition1", "transition3"):
        fast, exact = (n.encode(tiny_variables, images, layer) for n in (TINY, torch_order))
        np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())
        assert not np.array_equal(fast, exact)  # the order really differs


@pytest.mark.parametrize("layer", TINY.layer_names)
def test_decode_of_encode_is_the_full_forward(tiny_variables, images, layer):
    h = TINY.encode(tiny_variables, images, layer)
    assert h.shape[-1] == TINY.config.channels(layer)
    np.testing.assert_allclose(
        TINY.decode(tiny_variables, h, layer), TINY.apply(tiny_variables, images), atol=1e-5
    )


def test_several_layers_from_one_pass_equal_single_layers(tiny_variables, images):
    names = ("denseblock1", "denseblock2", "denseblock3")
    together = TINY.encode(tiny_variables, images, names)
    assert tuple(together) == names
    for name in names:
        np.testing.assert_array_equal(together[name], TINY.encode(tiny_variables, images, name))


def test_channel_counts_match_the_real_shapes_of_densenet121():
    net = DenseNet(densenet121())
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = net.abstract_variables()
    shapes = jax.eval_shape(lambda v, x: net.encode(v, x, net.layer_names), variables, x)
    assert shapes["denseblock1"].shape == (1, 56, 56, 256)
    assert shapes["denseblock2"].shape == (1, 28, 28, 512)
    assert shapes["denseblock3"].shape == (1, 14, 14, 1024)
    assert shapes["norm5"].shape == (1, 7, 7, 1024)
    for name, shape in shapes.items():
        assert shape.shape[-1] == net.config.channels(name), name


@pytest.mark.parametrize(
    ("make_config", "torchvision_parameters"),
    # Parameter counts of torchvision's ImageNet models (its model documentation).
    [
        (densenet121, 7_978_856),
        (densenet169, 14_149_480),
        (densenet201, 20_013_928),
        (densenet161, 28_681_000),
    ],
)
def test_parameter_count_equals_torchvision(make_config, torchvision_parameters):
    params = DenseNet(make_config()).abstract_variables()["params"]
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == torchvision_parameters


def test_initialisation_is_torchvisions(tiny_variables):
    """Convolutions kaiming_normal_ (an untruncated normal, std √(2 / fan_in)), the classifier
    PyTorch's Linear default (uniform within ±1/√fan_in, bias 0), BatchNorm 1 and 0."""
    standardised = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tiny_variables)[0]:
        name, leaf = "/".join(p.key for p in path), np.asarray(leaf)
        if name == "params/classifier/kernel":
            bound = 1 / np.sqrt(leaf.shape[0])
            assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound, name
        elif leaf.ndim == 4:
            standardised.append(leaf.ravel() / np.sqrt(2 / np.prod(leaf.shape[:-1])))
        else:
            assert name.endswith(("scale", "var", "bias", "mean")), name
            np.testing.assert_array_equal(leaf, 1.0 if name.endswith(("scale", "var")) else 0.0)
    z = np.concatenate(standardised)
    # A standard normal sample of n: mean and std within 5 standard errors, and 4.55 % beyond
    # ±2 (a truncated normal, Flax's default, has none).
    n = z.size
    assert n > 20_000 and abs(z.mean()) < 5 / np.sqrt(n) and abs(z.std() - 1) < 5 / np.sqrt(2 * n)
    assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 5 * np.sqrt(0.0455 / n)
    assert jax.tree.structure(tiny_variables) == jax.tree.structure(TINY.abstract_variables())
    again, other = TINY.init(jax.random.key(0), 64), TINY.init(jax.random.key(1), 64)
    chex.assert_trees_all_equal(again, tiny_variables)
    assert not np.array_equal(
        other["params"]["conv0"]["kernel"], again["params"]["conv0"]["kernel"]
    )


def test_one_channel_input():
    net = DenseNet(densenet_tiny(in_channels=1))
    variables = net.init(jax.random.key(0), 32)
    assert variables["params"]["conv0"]["kernel"].shape == (7, 7, 1, 16)
    assert net.apply(variables, jnp.ones((3, 32, 32, 1))).shape == (3, 3)


def test_jit_equals_no_jit(tiny_variables, images):
    eager = TINY.encode(tiny_variables, images, "denseblock3")
    compiled = jax.jit(TINY.encode, static_argnums=2)(tiny_variables, images, "denseblock3")
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_vmap_equals_batched_call(tiny_variables, images):
    per_image = jax.vmap(lambda x: TINY.apply(tiny_variables, x[None])[0])(images)
    np.testing.assert_allclose(per_image, TINY.apply(tiny_variables, images), atol=1e-5)


def test_second_call_does_not_retrace(tiny_variables, images):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(variables, x):
        return TINY.decode(variables, TINY.encode(variables, x, "pool0"), "pool0")

    forward(tiny_variables, images)
    forward(tiny_variables, images + 1.0)
    forward(jax.tree.map(lambda a: a * 1.0, tiny_variables), images)


def test_model_is_hashable_and_usable_as_static_argument(tiny_variables, images):
    run = jax.jit(lambda net, v, x: net.apply(v, x), static_argnums=0)
    same_net = DenseNet(densenet_tiny())
    assert hash(same_net) == hash(TINY)
    np.testing.assert_allclose(
        run(same_net, tiny_variables, images), TINY.apply(tiny_variables, images)
    )


def test_heads(tiny_variables, images):
    logits = TINY.apply(tiny_variables, images)
    sigmoid = DenseNet(densenet_tiny(head="sigmoid")).link(logits)
    relu = DenseNet(densenet_tiny(head="relu")).link(logits)
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-np.asarray(logits))), rtol=1e-6)
    np.testing.assert_array_equal(relu, np.maximum(np.asarray(logits), 0))
    np.testing.assert_array_equal(TINY.link(logits), logits)


def test_train_mode_uses_batch_statistics_and_returns_new_ones(tiny_variables, images):
    logits, batch_stats = TINY.apply_train(tiny_variables, images)
    assert logits.shape == (2, 3)
    old = tiny_variables["batch_stats"]["norm0"]["mean"]
    assert not np.allclose(batch_stats["norm0"]["mean"], old)
    assert jax.tree.structure(batch_stats) == jax.tree.structure(tiny_variables["batch_stats"])


def test_config_round_trips_through_a_dict():
    config = densenet161(num_classes=14, in_channels=1, head="sigmoid")
    assert DenseNetConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.ones((64, 64, 3)), r"x: expected a batch of images .* got shape \(64, 64, 3\)"),
        (np.ones((1, 3, 64, 64)), r"x: expected 3 channel.*channels-first"),
        (np.ones((1, 16, 16, 3)), r"x: expected height and width >= 32"),
    ],
)
def test_bad_images_are_refused_by_name(tiny_variables, x, match):
    with pytest.raises(ValueError, match=match):
        TINY.apply(tiny_variables, x)


def test_bad_layer_names_and_features_are_refused(tiny_variables, images):
    with pytest.raises(ValueError, match=r"layer: expected one of .*'denseblock3'.*got 'block3'"):
        TINY.encode(tiny_variables, images, "block3")
    with pytest.raises(ValueError, match=r"h: expected 32 channels .*'denseblock3'"):
        TINY.decode(tiny_variables, jnp.ones((1, 4, 4, 16)), "denseblock3")


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="head: expected one of"):
        densenet121(head="softmax")
    with pytest.raises(ValueError, match="growth_rate: expected a positive integer"):
        densenet121(growth_rate=0)
    with pytest.raises(ValueError, match="block_config"):
        DenseNetConfig(block_config=[6, 12])


def test_run_between_chains_to_the_full_forward(tiny_variables, images):
    h1 = TINY.encode(tiny_variables, images, "denseblock1")
    h3 = TINY.run_between(tiny_variables, h1, "denseblock1", "denseblock3")
    np.testing.assert_allclose(h3, TINY.encode(tiny_variables, images, "denseblock3"), atol=1e-5)
    with pytest.raises(ValueError, match="stop: expected a layer after 'denseblock3'"):
        TINY.run_between(tiny_variables, h3, "denseblock3", "denseblock1")


def sigmoid(logits):
    return jax.nn.sigmoid(logits)


def test_predict_is_the_compiled_link_of_the_logits(tiny_variables, images):
    net = DenseNet(densenet_tiny(head="sigmoid"))
    expected = net.link(net.apply(tiny_variables, images))
    np.testing.assert_allclose(predict(net, tiny_variables, images), expected, rtol=1e-6)
    # One program per model and shape: a link that fails when it is traced a second time.
    counted = FunctionModel(
        net.encode,
        net.decode,
        net.layer_names,
        net.num_outputs,
        net.in_channels,
        net.min_image_size,
        link=chex.assert_max_traces(sigmoid, n=1),
    )
    np.testing.assert_allclose(predict(counted, tiny_variables, images), expected, rtol=1e-6)
    predict(counted, tiny_variables, images + 1.0)
