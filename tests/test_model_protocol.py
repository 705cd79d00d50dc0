"""Any model: every method runs on a user's Flax module given as a plain pair of functions, and a
DenseNet behind that pair gives its own maps bit for bit."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import iba_jax as ij
from iba_jax.attribute import IBAConfig
from iba_jax.methods import METHODS, MethodSettings, attribution_maps

QUICK = IBAConfig(steps=3, samples=2)
LAYERS = ("block1", "block2")


class Block(nn.Module):  # a user's module: nothing of iba_jax in it
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3), strides=2)(x))


class Head(nn.Module):
    @nn.compact
    def __call__(self, h):
        return nn.Dense(3)(jnp.mean(h, axis=(1, 2)))


BLOCKS = {"block1": Block(8), "block2": Block(16)}


def encode(variables, x, layer):
    for name in LAYERS[: LAYERS.index(layer) + 1]:
        x = BLOCKS[name].apply(variables[name], x)
    return x


def decode(variables, h, layer):
    for name in LAYERS[LAYERS.index(layer) + 1 :]:
        h = BLOCKS[name].apply(variables[name], h)
    return Head().apply(variables["head"], h)


@pytest.fixture(scope="module")
def user_model():
    model = ij.FunctionModel(encode, decode, LAYERS, num_outputs=3, in_channels=1, min_image_size=8)
    keys = jax.random.split(jax.random.key(0), 3)
    x = jnp.zeros((1, 32, 32, 1))
    variables = {"block1": BLOCKS["block1"].init(keys[0], x)}
    h = BLOCKS["block1"].apply(variables["block1"], x)
    variables["block2"] = BLOCKS["block2"].init(keys[1], h)
    variables["head"] = Head().init(keys[2], BLOCKS["block2"].apply(variables["block2"], h))
    data = jax.random.normal(jax.random.key(1), (32, 32, 32, 1))
    stats = ij.estimate_feature_stats(model, variables, [data], LAYERS)
    return model, variables, stats, data[:2]


def test_a_pair_of_functions_is_a_model(user_model):
    model, variables, _, images = user_model
    assert isinstance(model, ij.Model)
    assert model.apply(variables, images).shape == (2, 3)
    h = model.encode(variables, images, "block1")
    np.testing.assert_array_equal(
        model.decode(variables, h, "block1"), model.apply(variables, images)
    )
    with pytest.raises(ValueError, match="layer"):
        model.encode(variables, images, "block3")


def test_every_method_runs_on_the_user_model(user_model):
    model, variables, stats, images = user_model
    settings = MethodSettings(
        iba=QUICK,
        unroll=False,
        iba_layer="block2",
        multilayer_layers=LAYERS,
        grad_cam_layer="block2",
        ig_steps=4,
    )
    key = jax.random.key(2)
    for name in METHODS:
        if name == "lrp":
            with pytest.raises(
                ValueError,
                match="model: LRP's rules cover the layers of this package's DenseNet and ResNet",
            ):
                attribution_maps(name, model, variables, stats, images, [0, 1], key=key)
            continue
        labels = [1.0, 2.0] if METHODS[name].needs_labels else None
        maps = attribution_maps(
            name, model, variables, stats, images, [0, 1], key=key, settings=settings, labels=labels
        )
        assert maps.shape == (2, 32, 32) and np.all(np.isfinite(maps)), name
    maps, aux = ij.coiba(
        model, variables, stats, images, 1, layers=("block2",), config=QUICK, unroll=False, key=key
    )
    assert maps.shape == (2, 32, 32) and aux.lam.shape == (2, 8, 8, 1)


def test_what_a_plain_model_lacks_is_refused_by_name(user_model):
    model, variables, stats, images = user_model
    with pytest.raises(ValueError, match=r"model: CoIBA at several layers needs the model's "):
        ij.coiba(model, variables, stats, images, 1, layers=LAYERS, config=QUICK, unroll=False)
    with pytest.raises(ValueError, match=r"needs the model's abstract_variables\(\)"):
        ij.iba(
            model,
            variables,
            stats["block2"],
            images,
            0,
            layer="block2",
            config=QUICK,
            unroll=False,
            images_per_call="auto",
            key=jax.random.key(0),
        )
    with pytest.raises(
        TypeError, match=r"model: expected an iba_jax Model .* lacks \['layer_names'"
    ):
        ij.iba(object(), variables, stats["block2"], images, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="layer_names: expected a non-empty tuple"):
        ij.FunctionModel(encode, decode, "block1", num_outputs=3, in_channels=1)


def test_a_densenet_behind_a_pair_of_functions_gives_its_own_maps(tiny_model):
    net, variables = tiny_model
    wrapped = ij.FunctionModel(
        net.encode,
        net.decode,
        net.layer_names,
        net.num_outputs,
        net.in_channels,
        net.min_image_size,
        standard_layers=net.standard_layers,  # so the methods' default layers are DenseNet's
    )
    data = jax.random.normal(jax.random.key(3), (16, 64, 64, 3))
    stats = ij.estimate_feature_stats(net, variables, [data], "denseblock3")
    np.testing.assert_array_equal(
        ij.estimate_feature_stats(wrapped, variables, [data], "denseblock3").std, stats.std
    )
    key = jax.random.key(4)
    for method in (ij.iba, ij.inverse_iba):
        direct = method(
            net, variables, stats, data[:2], [0, 2], config=QUICK, unroll=False, key=key
        )[0]
        through = method(
            wrapped, variables, stats, data[:2], [0, 2], config=QUICK, unroll=False, key=key
        )[0]
        np.testing.assert_array_equal(through, direct)
    bare = dataclasses.replace(wrapped, standard_layers=None)
    with pytest.raises(ValueError, match=r"layer: FunctionModel declares no standard layers"):
        ij.iba(bare, variables, stats, data[:2], 0, config=QUICK, unroll=False, key=key)
    with pytest.raises(ValueError, match=r"standard_layers: expected one of 'conv0', "):
        dataclasses.replace(wrapped, standard_layers=ij.StandardLayers("x", ("x",), "x"))
