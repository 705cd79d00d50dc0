"""Train a model: ``python -m train.main --config train/configs/NAME.py --workdir DIR``.

Running the same command again after a kill resumes from the last checkpoint in DIR.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax

from train.config import load_config
from train.trainer import CorruptCheckpointError, train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.main", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="a config file under train/configs/")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics.csv and models")
    parser.add_argument("--data-dir", default=None, help="override the config's TFDS data_dir")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.data_dir is not None:
            cfg = cfg.replace(data_dir=args.data_dir)
        print(f"config {args.config}; devices {jax.local_devices()}; workdir {args.workdir}")
        result = train(cfg, args.workdir)
    except (ValueError, FileNotFoundError, CorruptCheckpointError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    print(f"done: step {result['step']}, best {cfg.best_metric} {result['best']}")
    print(f"models: {args.workdir}/best_model, {args.workdir}/final_model (iba_jax.load_bundle)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
