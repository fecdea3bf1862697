"""``braintumor evaluate`` and ``braintumor explain``: metrics with intervals, calibration, reports,
cross-validation; a Grad-CAM overlay of one scan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from braintumor.cli.common import add_recipe_options, command, recipe_from_args
from braintumor.errors import BrainTumorError


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """metrics with 95% intervals, calibration, plots and a report; ensembles; cross-validation

    Evaluate runs (several runs = an averaging ensemble) on labelled folders, or cross-validate a training recipe
    with --cv K.
    """
    data = [str(d) for d in args.data]
    if args.cv:
        from braintumor.evaluation.cv import cross_validate

        if not args.arch and not args.config:
            raise BrainTumorError("--cv trains a model per fold: give --arch (or --config)")
        cfg = recipe_from_args(args)
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
    """Grad-CAM heatmap of one scan, overlaid on the original

    With no --run: the exported model (--model, default the bundled one), whose graph computes Grad-CAM of the
    predicted class (an ensemble: the mean of its members' max-normalised maps); no torch needed. With --run: a
    torch checkpoint, which also gives Grad-CAM++ and any --target class.
    """
    from PIL import Image

    from braintumor.imaging.io import load_image

    image = load_image(args.image)
    if args.run is None:
        return _explain_export(args, image)
    from braintumor.explain.explainer import explain_image
    from braintumor.training.checkpoint import load_checkpoint

    if args.model is not None:
        raise BrainTumorError("give --run (a torch checkpoint) or --model (an export), not both")
    model, _ = load_checkpoint(Path(args.run) / "checkpoint.pt")
    card = model.card
    ex = explain_image(model, card, image, method=args.method, target=args.target, alpha=args.alpha)
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


def _explain_export(args: argparse.Namespace, image: Any) -> int:
    """``explain`` with an exported model: the in-graph Grad-CAM map, drawn like the app and ``predict`` draw it."""
    from PIL import Image

    from braintumor.imaging.overlay import overlay
    from braintumor.inference.bundled import resolve_model_dir
    from braintumor.inference.predictor import Predictor

    if args.method != "gradcam" or args.target:
        raise BrainTumorError(
            "--method gradcam++ and --target need --run (a torch checkpoint): an exported model's graph computes "
            "Grad-CAM of the predicted class"
        )
    predictor = Predictor.load(resolve_model_dir(args.model), threads=args.threads)
    result = predictor.predict(image)  # the input gate's refusal is a one-line error
    if result.cam is None:
        raise BrainTumorError("this model returned no Grad-CAM map")
    Image.fromarray(overlay(image.pixels, result.cam, alpha=args.alpha)).save(args.out)
    if args.raw:
        import numpy as np

        np.save(args.raw, result.cam)
    print(
        json.dumps(
            {
                "image": str(args.image),
                "outcome": result.outcome,
                "p_tumor": round(result.p_tumor, 4),
                "tumor_type": result.tumor_type,
                "explained": "the predicted class (in-graph Grad-CAM)",
                "model": f"{result.model_name} v{result.model_version}",
                "members": [m.name for m in result.members],
                "heatmap": str(args.out),
            }
        )
    )
    return 0


def add_parser(sub: Any) -> None:
    p = command(sub, "evaluate", _cmd_evaluate)
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
    add_recipe_options(p, arch_help="backbone for --cv", config_help="training config for --cv")
    p.add_argument("--seed", type=int, default=42)

    e = command(sub, "explain", _cmd_explain)
    e.add_argument("image", type=Path, metavar="IMAGE")
    e.add_argument("--run", type=Path, help="a training run folder (torch checkpoint; Grad-CAM++ and --target)")
    e.add_argument("--model", type=Path, help="exported model or ensemble folder (default: the bundled model)")
    e.add_argument("--out", type=Path, required=True, help="overlay PNG to write")
    e.add_argument("--raw", type=Path, help="also save the raw map as .npy (--run: model input size; else the image's)")
    e.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
    e.add_argument("--method", default="gradcam", choices=("gradcam", "gradcam++"))
    e.add_argument("--target", help="class to explain (default: the predicted class)")
    e.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity")
