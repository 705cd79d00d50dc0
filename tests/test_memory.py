"""Device memory of IBA from XLA's analysis, and the automatic images per call."""

import jax
import numpy as np
import optax
import pytest

from iba_jax import memory
from iba_jax.attribute import IBAConfig, iba
from iba_jax.loop import LoopPieces
from iba_jax.models import DenseNet, densenet_tiny
from iba_jax.objectives import CleanPrediction, SquaredError, class_index_loss, target_bce
from iba_jax.stats import estimate_feature_stats

NET = DenseNet(densenet_tiny(in_channels=1))
QUICK = IBAConfig(steps=2, samples=2)


def test_memory_is_linear_in_the_images():
    estimate = memory.iba_memory(NET, "denseblock3", 64, QUICK, unroll=False)
    assert estimate.bytes_per_image > 0 and estimate.fixed_bytes >= 0
    three = memory._compiled_bytes(
        NET, ("denseblock3",), (64, 64), QUICK, LoopPieces(), False, 3, jax.devices()[0]
    )
    assert estimate.bytes_for(3) == pytest.approx(three, rel=0.02)  # a third compilation
    assert (
        memory.iba_memory(NET, "denseblock3", (64, 64), QUICK, unroll=False) is estimate
    )  # cached


def test_the_estimate_compiles_the_pieces_that_will_run():
    traced = []

    @class_index_loss
    def recorded_bce(logits, target):
        traced.append(logits.shape)
        return target_bce(logits, target)

    sgd = LoopPieces(model_loss=recorded_bce, optimizer=optax.sgd(1.0))
    assert memory.iba_memory(NET, "denseblock3", 64, QUICK, pieces=sgd, unroll=False)
    assert traced == [(QUICK.samples, NET.num_outputs)] * 2  # for one image and for two
    # The Deviation loss: the targets come from the clean outputs, none are passed.
    deviation = LoopPieces(model_loss=SquaredError(1), target_transform=CleanPrediction(1))
    estimate = memory.iba_memory(NET, "denseblock3", 64, QUICK, pieces=deviation, unroll=False)
    assert estimate.bytes_per_image > 0


def test_images_per_call_fill_the_given_share_of_the_device(monkeypatch):
    assert memory.device_memory_bytes() > 2**30  # this host's memory (CPU reports none)
    estimate = memory.iba_memory(NET, "denseblock3", 64, QUICK, unroll=False)
    free = estimate.fixed_bytes + 10.5 * estimate.bytes_per_image
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device=None: free)
    assert memory.images_per_call(NET, "denseblock3", 64, QUICK, unroll=False, fraction=1.0) == 10
    expected = int((0.5 * free - estimate.fixed_bytes) // estimate.bytes_per_image)
    assert (
        memory.images_per_call(NET, "denseblock3", 64, QUICK, unroll=False, fraction=0.5)
        == expected
    )
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device=None: 1)
    assert memory.images_per_call(NET, "denseblock3", 64, QUICK, unroll=False) == 1  # never 0
    with pytest.raises(ValueError, match=r"fraction: expected a share of memory in \(0, 1\]"):
        memory.images_per_call(NET, "denseblock3", 64, QUICK, unroll=False, fraction=1.5)


def test_auto_images_per_call_gives_the_same_maps(monkeypatch):
    variables = NET.init(jax.random.key(0), 64)
    images = jax.random.uniform(jax.random.key(1), (5, 64, 64, 1))
    stats = estimate_feature_stats(NET, variables, [images], "denseblock3")
    estimate = memory.iba_memory(NET, "denseblock3", 64, QUICK, unroll=False)
    fits_two = (estimate.fixed_bytes + 2.5 * estimate.bytes_per_image) / 0.8
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device=None: fits_two)
    calls = []
    chosen = memory.images_per_call
    monkeypatch.setattr(
        memory, "images_per_call", lambda *a, **k: calls.append(chosen(*a, **k)) or calls[-1]
    )
    run = lambda **chunking: iba(
        NET,
        variables,
        stats,
        images,
        [0, 1, 2, 0, 1],
        config=QUICK,
        unroll=False,
        key=jax.random.key(2),
        **chunking,
    )[0]
    auto = run(images_per_call="auto")
    assert calls == [2]
    np.testing.assert_allclose(auto, run(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="images_per_call: expected a positive integer, 'auto'"):
        run(images_per_call="many")
