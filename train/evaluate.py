"""Metrics of a trained model bundle on a split:
``python -m train.evaluate --config CONFIG --model DIR [--split test]``.

Prints one JSON object (the same metrics as the validation log).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence

import jax

from iba_jax.bundle import load_bundle
from train import data
from train.config import load_config
from train.trainer import evaluate, make_predict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.evaluate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="the config the model was trained with")
    parser.add_argument("--model", required=True, help="a model bundle directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-dir", default=None, help="override the config's TFDS data_dir")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.data_dir is not None:
        cfg = cfg.replace(data_dir=args.data_dir)
    bundle = load_bundle(args.model)
    predict = jax.jit(make_predict(cfg, bundle.model))
    split = data.open_split(cfg, args.split)
    place = functools.partial(jax.device_put, device=jax.local_devices()[0])
    scores = evaluate(cfg, predict, bundle.variables, split, place)
    print(json.dumps({"split": args.split, "examples": len(split), **scores}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
