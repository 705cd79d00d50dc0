"""The ``iba-jax`` command.

Subcommands:
  convert   PyTorch DenseNet weights (.npz, .safetensors, .pt/.pth) -> model bundle directory
  demo      the end-to-end demo (for now: a DenseNet forward pass on a synthetic chest-like image)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax.bundle import NORMALIZATIONS, InputSpec, ModelBundle, load_bundle, save_bundle
from iba_jax.labels import LABEL_SETS, parse_label_names
from iba_jax.models.densenet import ARCHITECTURES, HEADS, DenseNet
from iba_jax.models.torch_import import infer_config, load_state_dict, variables_from_state_dict


def _convert(args: argparse.Namespace) -> None:
    state_dict = load_state_dict(args.weights)
    config = None
    if args.arch is not None:  # check against the named architecture instead of trusting shapes
        config = ARCHITECTURES[args.arch](
            num_classes=infer_config(state_dict).num_classes,
            in_channels=args.in_channels,
            head=args.head,
        )
    variables, config = variables_from_state_dict(state_dict, config, head=args.head)
    bundle = ModelBundle(
        config=config,
        variables=variables,
        label_names=parse_label_names(args.labels, config.num_classes),
        input_spec=InputSpec.named(args.normalization, args.image_size),
    )
    checksum = save_bundle(args.out, bundle, overwrite=args.overwrite)
    print(f"read {len(state_dict)} tensors from {args.weights}")
    print(f"model: {config}")
    print(f"wrote the model bundle {args.out} (sha256 {checksum[:16]}...)")


def _synthetic_chest_image(size: int, channels: int) -> np.ndarray:
    """A smooth chest-like test image in [0, 1]: two dark lung fields in a bright thorax."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    thorax = np.exp(-((((xx - 0.5) / 0.42) ** 2 + ((yy - 0.55) / 0.5) ** 2) ** 2))
    lungs = sum(
        np.exp(-((((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.28) ** 2) ** 2)) for cx in (0.32, 0.68)
    )
    image = np.clip(0.15 + 0.7 * thorax - 0.45 * lungs, 0.0, 1.0).astype(np.float32)
    return np.repeat(image[None, :, :, None], channels, axis=-1)


def _demo(args: argparse.Namespace) -> None:
    if args.model is not None:
        bundle = load_bundle(args.model)
        source = f"bundle {args.model}"
    else:
        config = ARCHITECTURES[args.arch](num_classes=14)
        net = DenseNet(config)
        bundle = ModelBundle(config, net.init(jax.random.key(args.seed)), LABEL_SETS["nih14"])
        source = f"{args.arch}, random weights (seed {args.seed})"
    net = bundle.model
    size = args.image_size or bundle.input_spec.image_size
    x = bundle.input_spec.normalize(
        jnp.asarray(_synthetic_chest_image(size, bundle.config.in_channels))
    )
    print(f"model: {source}; devices: {jax.devices()}")
    forward = jax.jit(lambda v, x: net.head_outputs(net.apply(v, x)))
    start = time.perf_counter()
    outputs = jax.block_until_ready(forward(bundle.variables, x))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    outputs = jax.block_until_ready(forward(bundle.variables, x))
    run_s = time.perf_counter() - start
    print(f"input: synthetic chest-like image, {size}x{size}x{bundle.config.in_channels}")
    for name, value in zip(bundle.label_names, np.asarray(outputs)[0], strict=True):
        print(f"  {name:20s} {value:+.4f}")
    print(f"first call (compile + run): {compile_s:.2f} s; second call: {run_s * 1e3:.1f} ms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iba-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser(
        "convert", help="convert PyTorch DenseNet weights to a model bundle directory"
    )
    convert.add_argument("weights", help="a .npz, .safetensors or .pt/.pth state dict")
    convert.add_argument("out", help="the model bundle directory to write")
    convert.add_argument(
        "--head",
        choices=HEADS,
        default="linear",
        help="what follows the classifier: linear (torchvision), sigmoid "
        "(CheXNet, torchxrayvision), relu (BrixIA regression)",
    )
    convert.add_argument(
        "--labels",
        default=None,
        help=f"label names: a named set ({', '.join(LABEL_SETS)}), @FILE with "
        "one per line, or a comma-separated list",
    )
    convert.add_argument(
        "--normalization",
        choices=sorted(NORMALIZATIONS),
        default="imagenet",
        help="input normalisation of pixels in [0, 1]",
    )
    convert.add_argument("--image-size", type=int, default=224)
    convert.add_argument(
        "--arch",
        choices=sorted(ARCHITECTURES),
        default=None,
        help="check the weights against this architecture instead of inferring it",
    )
    convert.add_argument(
        "--in-channels", type=int, default=3, help="input channels expected with --arch"
    )
    convert.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    convert.set_defaults(func=_convert)

    demo = sub.add_parser("demo", help="run the end-to-end demo")
    demo.add_argument("--model", default=None, help="a model bundle directory")
    demo.add_argument(
        "--arch",
        choices=sorted(ARCHITECTURES),
        default="densenet121",
        help="architecture with random weights when no --model is given",
    )
    demo.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (default: the bundle's, 224 for random weights)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        print(f"iba-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
