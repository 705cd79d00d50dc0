"""The reference PyTorch IBA's side of ``vs_reference.py`` (torch only; no JAX, no iba_jax).

Runs in the Python that has torch and torchvision (``IBA_REFERENCE_PYTHON``), with the checkout
of BioroboticsLab/IBA at ``IBA_REFERENCE_PATH`` (the folder holding the ``IBA`` package).

  python reference_worker.py --probe          prints the versions as JSON, or exits 3 saying why
  python reference_worker.py IN.npz OUT.npz   builds torchvision's DenseNet-121 (seeded), has the
      reference estimate the statistics on IN's estimation images and analyse each image
      (recording its noise draws), and writes the weights, statistics, maps, noise and times

``IN.npz``: ``images`` and ``estimation`` (N, 3, H, W) normalised, ``targets`` (N,), ``settings``
(a JSON string: seed, layer, num_classes, beta, steps, samples, learning_rate, initial_alpha,
sigma, min_std). The model loss is the BCE with logits of the target class (target 1), the
mean over the noise samples.
"""

import json
import os
import sys
import time
import warnings


def probe() -> dict:
    path = os.environ.get("IBA_REFERENCE_PATH")
    if not path:
        raise RuntimeError("IBA_REFERENCE_PATH is not set (a checkout of BioroboticsLab/IBA)")
    if not os.path.isfile(os.path.join(path, "IBA", "pytorch.py")):
        raise RuntimeError(f"IBA_REFERENCE_PATH={path} has no IBA/pytorch.py")
    import torch
    import torchvision

    sys.path.insert(0, path)
    import IBA.pytorch  # noqa: F401

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "iba_path": path}


def run(inputs_path: str, outputs_path: str) -> None:
    import numpy as np
    import torch
    import torchvision
    from IBA.pytorch import IBA

    data = np.load(inputs_path)
    settings = json.loads(str(data["settings"]))
    torch.manual_seed(settings["seed"])
    model = torchvision.models.densenet121(num_classes=settings["num_classes"]).eval()
    layer = getattr(model.features, settings["layer"])
    bottleneck = IBA(
        layer,
        sigma=settings["sigma"],
        beta=settings["beta"],
        min_std=settings["min_std"],
        optimization_steps=settings["steps"],
        lr=settings["learning_rate"],
        batch_size=settings["samples"],
        initial_alpha=settings["initial_alpha"],
    )
    estimation = torch.from_numpy(data["estimation"])
    batches = [(estimation[i : i + 8],) for i in range(0, len(estimation), 8)]
    bottleneck.estimate(model, batches, n_samples=len(estimation), progbar=False)

    draws = []
    normal = torch.Tensor.normal_

    def recording_normal(tensor, *args, **kwargs):
        out = normal(tensor, *args, **kwargs)
        draws.append(out.detach().clone().numpy())
        return out

    maps, noise, seconds = [], [], []
    for image, target in zip(data["images"], data["targets"], strict=True):

        def model_loss(batch, target=int(target)):
            logits = model(batch)[:, target]
            return torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.ones_like(logits)
            )

        draws.clear()
        torch.Tensor.normal_ = recording_normal
        try:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "fewer than 1000 samples" for a short estimate
                saliency = bottleneck.analyze(torch.from_numpy(image[None]), model_loss)
            seconds.append(time.perf_counter() - start)
        finally:
            torch.Tensor.normal_ = normal
        maps.append(np.asarray(saliency, np.float32))
        noise.append(np.stack(draws))  # (steps, samples, C, h, w)

    estimator = bottleneck.estimator
    state = {f"state_dict/{k}": v.numpy() for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    np.savez(
        outputs_path,
        maps=np.stack(maps),
        noise=np.stack(noise).astype(np.float32),
        seconds=np.asarray(seconds),
        mean=estimator.mean().numpy(),
        std=estimator.std().numpy(),
        active=estimator.active_neurons(0.01).numpy(),
        count=np.int64(estimator.n_samples()),
        versions=json.dumps({**probe(), "threads": torch.get_num_threads()}),
        **state,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        try:
            print(json.dumps(probe()))
        except (ImportError, RuntimeError) as error:
            print(f"{type(error).__name__}: {error}")
            sys.exit(3)
    else:
        sys.path.insert(0, os.environ["IBA_REFERENCE_PATH"])
        run(sys.argv[1], sys.argv[2])
