"""Seeded stand-in weights for a torch state dict, by key and shape: the fixture generator
(tests/data/torch_resnet/make_fixture.py) loads them into torchvision's modules, and the tests
make the same arrays again from the recorded keys, so the fixtures hold no weights."""

import numpy as np


def seeded_state_dict(shapes, seed):
    """``{key: array}`` for ``[(key, shape), ...]``: convolution and linear weights normal with
    std √(1/fan_in), BatchNorm scales and variances uniform in [0.5, 1.5], biases and means
    normal with std 0.1 (so that BatchNorm is not the identity); ``num_batches_tracked`` 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shapes:
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = np.zeros(shape, np.int64)
        elif key.endswith("weight") and len(shape) > 1:
            out[key] = rng.normal(0, np.sqrt(1 / np.prod(shape[1:])), shape)
        elif key.endswith(("running_var", "weight")) or key == "op_threshs":
            out[key] = rng.uniform(0.5, 1.5, shape)
        else:
            out[key] = rng.normal(0, 0.1, shape)
        if out[key].dtype == np.float64:
            out[key] = out[key].astype(np.float32)
    return out
