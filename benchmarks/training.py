"""Training throughput: images per second of the trainer's jitted step (forward, backward, Adam,
augmentation) on random data, for DenseNet-121 at 224 px and the shipped phantom model at 128 px.

Run: ``.venv/bin/python benchmarks/training.py [--steps 5]``. The last line is a JSON object.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the trainer lives in the checkout (train/), not in the package

from train.config import load_config  # noqa: E402
from train.trainer import build_model, initial_state, make_optimizer, make_train_step  # noqa: E402

SETTINGS = {
    # name: (config file, batch size)
    "densenet121_224": ("train/configs/nih_bce.py", 16),
    "phantom_model_128": ("train/configs/phantoms_cls.py", 32),
}


def images_per_second(config_file: str, batch: int, steps: int) -> tuple[float, float]:
    cfg = load_config(str(ROOT / config_file)).replace(batch_size=batch)
    model = build_model(cfg)
    variables = model.init(jax.random.key(0), cfg.image_size)
    optimizer = make_optimizer(cfg, 1000, variables["params"], ())
    state = initial_state(variables, optimizer)
    step = jax.jit(make_train_step(cfg, model, optimizer, None, ()), donate_argnums=0)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, cfg.image_size, cfg.image_size, 1), np.uint8))
    targets = jnp.asarray(rng.integers(0, 2, (batch, cfg.num_outputs)).astype(np.float32))
    start = time.perf_counter()
    state, loss = step(state, images, targets, jax.random.key(1))
    jax.block_until_ready(loss)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        state, loss = step(state, images, targets, jax.random.key(i))
    jax.block_until_ready(loss)
    return batch * steps / (time.perf_counter() - start), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    figures = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "jax": jax.__version__}
    for name, (config_file, batch) in SETTINGS.items():
        rate, first = images_per_second(config_file, batch, args.steps)
        figures[f"{name}_images_per_s"] = round(rate, 1)
        figures[f"{name}_first_step_s"] = round(first, 1)
        print(
            f"{name}: batch {batch}: {rate:.1f} images/s (first step, with compile: {first:.1f} s)"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
