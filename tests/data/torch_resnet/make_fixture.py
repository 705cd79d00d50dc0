"""Records torchvision's ResNet outputs for tests/test_resnet.py (run once, with torch and
torchvision; the tests need neither).

    python tests/data/torch_resnet/make_fixture.py

Each case: torchvision's module with seeded stand-in weights (tests/torch_weights.py), a seeded
input, and what torch computes in eval mode: the output of every stage (layer1..layer4) and the
logits. Saved: ``CASE.npz`` (input and outputs, NCHW as torch) and ``CASE.json`` (the state
dict's keys and shapes, from which the tests make the same weights). Made with torch 2.13.0+cpu
and torchvision 0.28.0 (its nms registration needs CUDA torch: the fake-kernel registration is
skipped on import; the models do not use it).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.library

torch.library.register_fake = lambda *a, **k: lambda f: f
import torchvision  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1]))
from torch_weights import seeded_state_dict  # noqa: E402


class XRayResNet50(torch.nn.Module):
    """torchxrayvision's ResNet-50 layout: torchvision's resnet50 under ``model.``, with a
    one-channel conv1, 18 outputs and an ``op_threshs`` buffer."""

    def __init__(self):
        super().__init__()
        self.model = torchvision.models.resnet50(num_classes=18, weights=None)
        self.model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.register_buffer("op_threshs", torch.ones(18))

    def forward(self, x):
        return self.model(x)


CASES = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), (2, 3, 64, 64)),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), (2, 3, 32, 32)),
    "xrv_resnet50": (XRayResNet50, (1, 1, 64, 64)),
}


def record(name, make, input_shape, seed):
    module = make().eval()
    shapes = [(k, list(v.shape)) for k, v in module.state_dict().items()]
    weights = seeded_state_dict(shapes, seed)
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    x = torch.from_numpy(np.random.default_rng(seed + 1).normal(size=input_shape).astype("f4"))
    net = module.model if hasattr(module, "model") else module
    out = {"input": x.numpy()}
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(net, stage)(h)
            out[stage] = h.numpy()
        out["logits"] = module(x).numpy()
    np.savez_compressed(HERE / f"{name}.npz", **out)
    (HERE / f"{name}.json").write_text(json.dumps({"seed": seed, "shapes": shapes}) + "\n")
    print(name, {k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    print("torch", torch.__version__, "torchvision", torchvision.__version__)
    for i, (name, (make, shape)) in enumerate(CASES.items()):
        record(name, make, shape, seed=10 * i)
