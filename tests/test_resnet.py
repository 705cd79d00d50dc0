"""ResNet: torchvision's numbers from recorded fixtures, the cut points, weight import (also of
torchxrayvision's layout), and every method on it."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
from conftest import channels_last
from test_lrp import randomised
from torch_weights import seeded_state_dict

import iba_jax as ij
import iba_jax.cli
from iba_jax import lrp
from iba_jax.methods import METHODS, MethodSettings, attribution_maps
from iba_jax.models import ResNet, resnet18, resnet50, resnet_tiny
from iba_jax.models.torch_import import StateDictMismatchError, variables_from_state_dict

FIXTURES = Path(__file__).parent / "data" / "torch_resnet"
STAGES = ("layer1", "layer2", "layer3", "layer4")
QUICK = ij.IBAConfig(steps=3, samples=2)


def recorded(name):
    """The torch state dict (seeded stand-ins, made again from the recorded keys) and what
    torchvision computed with it (make_fixture.py)."""
    spec = json.loads((FIXTURES / f"{name}.json").read_text())
    with np.load(FIXTURES / f"{name}.npz") as arrays:
        outputs = {k: arrays[k] for k in arrays.files}
    return seeded_state_dict(spec["shapes"], spec["seed"]), outputs


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", resnet18()),
        ("resnet50", resnet50()),
        ("xrv_resnet50", resnet50(in_channels=1, num_classes=18)),
    ],
)
def test_torchvision_numbers_at_every_stage(name, expected):
    state_dict, torch_out = recorded(name)
    variables, config = variables_from_state_dict(state_dict)
    assert config == expected  # inferred from the shapes (xrv: under "model.", op_threshs)
    net = ResNet(config)
    x = channels_last(torch_out["input"])
    features = jax.jit(net.encode, static_argnums=2)(variables, x, STAGES)
    for stage in STAGES:
        want = channels_last(torch_out[stage])
        scale = np.abs(want).max()
        np.testing.assert_allclose(features[stage], want, atol=2e-5 * scale, err_msg=stage)
    logits = jax.jit(net.apply)(variables, x)
    want = torch_out["logits"]
    np.testing.assert_allclose(logits, want, atol=2e-5 * np.abs(want).max())


def test_a_state_dict_of_another_family_is_refused():
    state_dict, _ = recorded("resnet18")
    with pytest.raises(StateDictMismatchError, match="expected a densenet's weights"):
        variables_from_state_dict(state_dict, ij.densenet121())
    with pytest.raises(StateDictMismatchError, match=r"\(80 missing keys\); nothing was loaded"):
        variables_from_state_dict(state_dict, ij.models.resnet34())


def test_cut_points_and_shapes():
    net = ResNet(resnet_tiny())
    variables = net.init(jax.random.key(0), 64)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    logits = net.apply(variables, x)
    assert net.layer_names == ("conv1", "bn1", "relu", "maxpool", *STAGES)
    for layer in net.layer_names:
        h = net.encode(variables, x, layer)
        assert h.shape[-1] == net.config.channels(layer), layer
        np.testing.assert_allclose(net.decode(variables, h, layer), logits, atol=1e-5)
    h2 = net.encode(variables, x, "layer2")
    np.testing.assert_allclose(
        net.run_between(variables, h2, "layer2", "layer4"),
        net.encode(variables, x, "layer4"),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="h: expected 32 channels"):
        net.decode(variables, h2, "layer3")


def test_torch_initialisation():
    net = ResNet(resnet18(num_classes=10))
    params = net.init(jax.random.key(0), 64)["params"]
    kernel = params["layer3"]["0"]["conv2"]["kernel"]  # 3x3, 256 -> 256: fan_out 2304
    assert np.std(kernel) == pytest.approx(np.sqrt(2 / 2304), rel=0.02)
    bound = 1 / np.sqrt(512)  # fc: torch's Linear default, weight and bias
    for leaf in (params["fc"]["kernel"], params["fc"]["bias"]):
        assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.9 * bound


@pytest.fixture(scope="module")
def tiny_resnet():
    net = ResNet(resnet_tiny(in_channels=1))
    variables = net.init(jax.random.key(2), 64)
    data = jax.random.normal(jax.random.key(3), (32, 64, 64, 1))
    stats = ij.estimate_feature_stats(net, variables, [data], STAGES[:3])
    return net, variables, stats, data[:2]


def test_every_method_runs_on_a_resnet(tiny_resnet):
    net, variables, stats, images = tiny_resnet
    settings = MethodSettings.for_model(net, iba=QUICK, unroll=False, ig_steps=4)
    assert settings == MethodSettings(
        iba=QUICK,
        unroll=False,
        iba_layer="layer3",
        multilayer_layers=STAGES[:3],
        grad_cam_layer="layer4",
        ig_steps=4,
    )
    key = jax.random.key(4)
    # DenseNet's layers (the paper's defaults) are refused by name, not looked up elsewhere.
    for name, absent in (("iba", "denseblock3"), ("grad_cam", "norm5")):
        with pytest.raises(ValueError, match=f"settings: {name} runs at .*'{absent}'.*for_model"):
            attribution_maps(name, net, variables, stats, images, [0, 2], key=key)
    # The IBA functions default to the model's standard layers.
    standard = ij.iba(
        net, variables, stats["layer3"], images, 1, config=QUICK, unroll=False, key=key
    )
    at_layer3 = ij.iba(
        net,
        variables,
        stats["layer3"],
        images,
        1,
        layer="layer3",
        config=QUICK,
        unroll=False,
        key=key,
    )
    np.testing.assert_array_equal(standard[0], at_layer3[0])
    multilayer = ij.multilayer_iba(
        net, variables, stats, images, 1, config=QUICK, unroll=False, key=key
    )
    assert multilayer.map.shape == (2, 64, 64)
    for name in METHODS:
        labels = [1.0, 2.0] if METHODS[name].needs_labels else None
        maps = attribution_maps(
            name, net, variables, stats, images, [0, 2], key=key, settings=settings, labels=labels
        )
        assert maps.shape == (2, 64, 64) and np.all(np.isfinite(maps)), name
    maps, aux = ij.coiba(
        net, variables, stats, images, 1, layers=STAGES[1:3], config=QUICK, unroll=False, key=key
    )
    assert maps.shape == (2, 64, 64) and aux.lam.shape == (2, 8, 8, 1)


def test_lrp_conserves_through_the_residual_additions(tiny_resnet):
    # The additions pass the gradient to both summands: R_a + R_b = (a + b) ⊙ G = R_(a+b).
    net, variables, _, images = tiny_resnet
    v = randomised(variables, biases=False, negative_scales=True)
    relevance = lrp.lrp(net, v, images, [1, 2], rule="epsilon", epsilon=1e-9)
    logits = net.apply(v, images)[jnp.arange(2), jnp.array([1, 2])]
    np.testing.assert_allclose(relevance.sum(axis=(1, 2, 3)), logits, rtol=1e-4)
    # α1β0 stops at the BatchNorms' negative outputs before the additions: not conserved.
    positive = lrp.lrp(net, v, images, [1, 2])
    assert np.all(np.isfinite(positive))
    assert not np.allclose(positive.sum(axis=(1, 2, 3)), logits, rtol=1e-2)


def test_convert_torchxrayvision_resnet50_to_a_bundle_and_explain_with_it(tmp_path, capsys):
    # torchxrayvision's layout (model. prefix, op_threshs, one channel, 18 outputs) through a
    # torch file when torch is installed, as a user's .pt would come; else through .npz.
    state_dict, torch_out = recorded("xrv_resnet50")
    try:
        import torch

        weights = tmp_path / "xrv-resnet50.pt"
        torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, weights)
    except ImportError:
        weights = tmp_path / "xrv-resnet50.npz"
        np.savez(weights, **state_dict)
    out = tmp_path / "xrv-resnet50"
    args = ["convert", str(weights), str(out), "--normalization", "xrv", "--image-size", "64"]
    assert ij.cli.main([*args, "--head", "sigmoid", "--labels", "xrv18"]) == 0
    assert "ResNetConfig(block='bottleneck'" in capsys.readouterr().out
    bundle = ij.load_bundle(out)
    assert (
        isinstance(bundle.model, ResNet) and bundle.label_names[-1] == "Enlarged Cardiomediastinum"
    )
    logits = jax.jit(bundle.model.apply)(bundle.variables, channels_last(torch_out["input"]))
    want = torch_out["logits"]
    np.testing.assert_allclose(logits, want, atol=2e-5 * np.abs(want).max())
    # Its statistics and an IBA map through the bundle, as for a DenseNet.
    data = jax.random.normal(jax.random.key(5), (8, 64, 64, 1))
    stats = ij.estimate_feature_stats(bundle.model, bundle.variables, [data], "layer3")
    ij.save_feature_stats(out, "layer3", stats)
    maps, _ = ij.iba(
        bundle.model,
        bundle.variables,
        ij.load_feature_stats(out, "layer3"),
        data[:1],
        7,
        layer="layer3",
        config=QUICK,
        unroll=False,
        key=jax.random.key(6),
    )
    assert maps.shape == (1, 64, 64) and np.all(np.isfinite(maps))
    # The command line runs at the ResNet's standard layers (Grad-CAM at layer4, not norm5).
    picture = tmp_path / "scan.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 96), np.uint8)).save(picture)
    explained = tmp_path / "explained"
    command = ["explain", str(picture), "--model", str(out), "--method", "gradcam", "--target", "7"]
    assert ij.cli.main([*command, "--out", str(explained)]) == 0
    (written,) = explained.glob("scan.*.grad_cam.json")
    record = json.loads(written.read_text())
    assert record["settings"]["grad_cam_layer"] == "layer4"
    assert record["settings"]["iba_layer"] == "layer3"
