"""Maps in calls of one shape: padding, positions, and the same maps as one call."""

import jax
import numpy as np
import pytest

from iba_jax.methods import attribution_maps, target_key
from iba_jax.runner import maps_per_call


@pytest.mark.parametrize("method", ["random", "gradients"])
def test_calls_of_one_shape_give_the_maps_of_one_call(tiny_model, method):
    net, variables = tiny_model
    images = jax.random.normal(jax.random.key(0), (5, 64, 64, 3))
    targets = [0, 2, 1, 1, 0]
    keys = jax.numpy.stack([target_key(jax.random.key(1), i, t) for i, t in enumerate(targets)])
    whole = attribution_maps(method, net, variables, {}, images, targets, key=keys)
    calls = list(maps_per_call(method, net, variables, {}, images, targets, keys, per_call=2))
    assert [list(c.positions) for c in calls] == [[0, 1], [2, 3], [4]]  # the last one padded
    assert [c.maps.shape for c in calls] == [(2, 64, 64), (2, 64, 64), (1, 64, 64)]
    np.testing.assert_allclose(np.concatenate([c.maps for c in calls]), whole, rtol=1e-5)
    assert all(c.seconds > 0 for c in calls)
    with pytest.raises(ValueError, match="per_call: expected a positive integer"):
        next(maps_per_call(method, net, variables, {}, images, targets, keys, per_call=0))
