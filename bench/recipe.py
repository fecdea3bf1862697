"""Choose the default model's recipe on validation data: each ingredient's effect, per dataset.

    python bench/recipe.py                  # writes bench/results-recipe.md (runs in runs/recipe/)

Every variant trains MobileNetV2 (ImageNet) on the train part of the default model's grouped split (all three
shared datasets, seed 42) and is scored on its *validation* part only — the test part stays untouched for the
model card. Variants add one ingredient at a time to the previous default recipe:

1. ``typed only`` — the old recipe: yes/no tumors dropped (no type), shuffled epochs, frozen backbone;
2. ``+ partial labels`` — untyped tumors train the tumor / no-tumor decision, −log(1 − p(no tumor));
3–4. ``+ balanced sampling`` — draws ∝ n_cell^-0.5 over (dataset, class) cells (and ^-1.0);
5. ``+ balanced over sources`` — cells are (the datasets an image's duplicate group spans, class);
6. ``+ intensity/blur augmentation``;
7. ``+ fine-tuning`` — the bundled recipe: the top half of the backbone on cached activations of 12 views
   (the default model's own MobileNetV2 run, reused from ``runs/default`` when present);
8. ``+ whole backbone`` — every block fine-tuned, each epoch on fresh augmentations (no cache: the activations
   of the whole network would not fit), 6 epochs at most, after the head's warm-up on 2 cached views (the whole
   network runs in torch for every cached view: 12 would take 40 minutes here): the "full fine-tuning" the
   recipe lacked on 2 cores (about 45 minutes here for MobileNetV2).

``--against-shipped`` scores the bundled model's own members (the exports, ONNX Runtime fp32) beside variant
8's export on the same validation images, alone and in the ensemble (variant 8 in MobileNetV2's place), each
with the ensemble's decision rule fitted per dataset on those images as ``bench/train_default.py`` fits it: the
question whether a full fine-tune would improve the shipped model, answered without retraining the shipped
member (its run folder is not kept in a checkout) and without the test part.

The table shows, per variant, the validation figures per dataset (tumor vs no tumor at the validation
threshold): what each step changes where.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.data.audit import audit_records
from braintumor.data.datasets import discover_many
from braintumor.data.splits import make_split, write_split
from braintumor.evaluation.by_dataset import COLUMNS
from braintumor.evaluation.evaluate import evaluate_runs
from braintumor.training.config import BUNDLED_RECIPE, AugmentConfig, TrainConfig
from braintumor.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DIRS = [str(DATA / "brain_tumor_dataset"), str(DATA / "br35h"), str(DATA / "brain_tumor_mri_4class")]
AUG: AugmentConfig = BUNDLED_RECIPE.augment
BASE = {"arch": "mobilenet_v2", "task": "multiclass", "cached_views": 4, "fine_tune": False, "lr": 3e-4}
VARIANTS: dict[str, dict[str, Any]] = {
    "typed only (old recipe)": {"label_map": {"no": "notumor", "yes": ""}},
    "+ partial labels": {"label_map": {"no": "notumor", "yes": "tumor"}},
    "+ balanced sampling (power 0.5)": {"label_map": {"no": "notumor", "yes": "tumor"}, "sampling": "balanced",
                                        "balance_power": 0.5},
    "+ balanced sampling (power 1.0)": {"label_map": {"no": "notumor", "yes": "tumor"}, "sampling": "balanced",
                                        "balance_power": 1.0},
    "+ balanced over sources (power 0.5)": {"label_map": {"no": "notumor", "yes": "tumor"}, "sampling": "balanced",
                                            "balance_power": 0.5, "balance_by": "sources"},
    "+ intensity/blur augmentation": {"label_map": {"no": "notumor", "yes": "tumor"}, "sampling": "balanced",
                                      "balance_power": 0.5, "balance_by": "sources", "augment": AUG},
}  # fmt: skip
#: The bundled recipe itself (fine-tuning the top half on 12 cached views), MobileNetV2.
FULL = "+ fine-tuning (the bundled recipe)"
#: Beyond it: the whole backbone fine-tuned on fresh augmentations every epoch.
WHOLE = "+ whole backbone fine-tuned (fresh augmentations)"
WHOLE_CFG = replace(BUNDLED_RECIPE, arch="mobilenet_v2", unfreeze_fraction=1.0, cache_fine_tune=False,
                    cached_views=2, fine_tune_epochs=6, threads=2)  # fmt: skip
SHIPPED = ROOT / "src" / "braintumor" / "inference" / "default_model"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()[:48]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "recipe")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-recipe.md")
    parser.add_argument("--only", nargs="+", type=int, help="variant numbers (1-based) to run (the others: kept)")
    parser.add_argument("--retrain", action="store_true", help="train the variants run even if already trained")
    parser.add_argument(
        "--against-shipped",
        action="store_true",
        help="also score variant 8 against the bundled model's members on validation",
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    split = args.work / "split.csv"
    if not split.is_file():
        write_split(make_split(audit_records(discover_many(DIRS)), seed=42), split)
    results: dict[str, Any] = json.loads((args.work / "results.json").read_text()) if (
        args.work / "results.json").is_file() else {}  # fmt: skip
    plans = [(name, TrainConfig(**{**BASE, **overrides}), args.work / _slug(name)) for name, overrides in
             VARIANTS.items()]  # fmt: skip
    bundled = ROOT / "runs" / "default" / "mobilenet_v2"  # the default model's own member, when built here
    plans.append((FULL, replace(BUNDLED_RECIPE, arch="mobilenet_v2"),
                  bundled if (bundled / "checkpoint.pt").is_file() else args.work / _slug(FULL)))  # fmt: skip
    plans.append((WHOLE, WHOLE_CFG, args.work / _slug(WHOLE)))
    for k, (name, cfg, run) in enumerate(plans, start=1):
        if args.only and k not in args.only:
            continue
        if not (run / "checkpoint.pt").is_file() or args.retrain:
            t0 = time.perf_counter()
            train(cfg, DIRS, run, split=split, progress=False, log=lambda _: None)
            seconds = time.perf_counter() - t0
        else:
            card = json.loads((run / "card.json").read_text())
            seconds = results.get(name, {}).get("seconds", card["extra"]["training"]["metrics"]["seconds"])
        ev = evaluate_runs([run], DIRS, split=split, part="val", n_boot=500)
        results[name] = {"seconds": seconds, "rows": [r.as_dict() for r in ev.by_dataset],
                         "decision": ev.decision.as_dict() if ev.decision else None}  # fmt: skip
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
        print(f"{name}: {seconds:.0f} s", flush=True)
    if args.against_shipped:
        results[SHIPPED_KEY] = against_shipped(plans[-1][2], split, args.work)
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
    write(results, args.out)
    return 0


SHIPPED_KEY = "_against_shipped"


def against_shipped(run: Path, split: Path, work: Path) -> dict[str, Any]:
    """Validation figures of the shipped members and ensemble beside ``run`` (variant 8) exported, alone and in
    MobileNetV2's place: fp32, no input gate (every image scored), the ensemble's rule fitted per dataset."""
    from braintumor.data.datasets import is_tumor_label
    from braintumor.data.splits import read_split
    from braintumor.evaluation.by_dataset import figures_by_dataset
    from braintumor.evaluation.calibration import decision_rule
    from braintumor.export.onnx import export_run
    from braintumor.inference.batch import iter_scores
    from braintumor.inference.predictor import Predictor
    from braintumor.training.data import records_for_split

    shipped_spec = json.loads((SHIPPED / "ensemble.json").read_text())
    rows, sha = read_split(split)
    if sha != shipped_spec["split_sha256"]:
        raise SystemExit(
            f"the shipped model was built on split {shipped_spec['split_sha256'][:12]}, this is {sha[:12]}"
        )
    swapped = work / "shipped-with-variant-8"
    if swapped.exists():
        shutil.rmtree(swapped)
    shutil.copytree(SHIPPED, swapped, ignore=shutil.ignore_patterns("mobilenet_v2", "gate.npz"))
    export_run(run, swapped / "mobilenet_v2")
    spec = json.loads((swapped / "ensemble.json").read_text())
    spec.pop("gate", None)
    (swapped / "ensemble.json").write_text(json.dumps(spec, indent=2))
    val = records_for_split(DIRS, rows)["val"]
    y = np.array([int(is_tumor_label(r.label)) for r in val])
    datasets = [r.dataset for r in val]
    candidates = {
        "shipped MobileNetV2 member": SHIPPED / "mobilenet_v2",
        "variant 8 MobileNetV2": swapped / "mobilenet_v2",
        "shipped ensemble": SHIPPED,
        "ensemble, variant 8 in MobileNetV2's place": swapped,
    }
    out: dict[str, Any] = {}
    for name, folder in candidates.items():
        predictor = dataclasses.replace(Predictor.load(folder, precision="fp32"), gate=None)
        p = np.array([float(r["p_tumor"]) for r in iter_scores(predictor, [r.path for r in val])])
        rule = decision_rule(p, y, groups=datasets)
        figures = figures_by_dataset(datasets, y, p, rule, n_boot=500)
        out[name] = {"rows": [f.as_dict() for f in figures], "decision": rule.as_dict()}
        print(f"{name}: threshold {rule.threshold:.3f}", flush=True)
    return out


def _cell(m: dict[str, float]) -> str:
    return "–" if m["value"] != m["value"] else f"{m['value']:.3f}"


def write(results: dict[str, Any], out: Path) -> None:
    lines = [
        "# Recipe ablation on validation data (MobileNetV2)",
        "",
        "Command: `python bench/recipe.py`. Train part of the default model's grouped split (seed 42); every "
        "figure on its validation part (n = 785): tumor vs no tumor at each variant's own validation threshold, "
        "refer band fitted on the same validation data (so the refer share and outside accuracy are in-sample "
        "here). Point estimates; 95% intervals in runs/recipe/results.json.",
        "",
        "| variant | dataset | " + " | ".join(COLUMNS) + " | train s |",
        "|---|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    missing = [f"{k} ({name})" for k, name in enumerate([*VARIANTS, FULL, WHOLE], start=1) if name not in results]
    if missing:
        lines[4:4] = [
            f"Not run into this file yet: variant(s) {', '.join(missing)} (`python bench/recipe.py --only N`).",
            "",
        ]
    for name in [*VARIANTS, FULL, WHOLE]:
        if name not in results:
            continue
        for row in results[name]["rows"]:
            cells = " | ".join(_cell(row["metrics"][c]) for c in COLUMNS)
            lines.append(f"| {name} | {row['dataset']} (n={row['n']}) | {cells} | {results[name]['seconds']:.0f} |")
    shipped = results.get(SHIPPED_KEY)
    if shipped:
        lines += [
            "",
            "## Variant 8 against the shipped members (`python bench/recipe.py --only 8 --against-shipped`)",
            "",
            "The bundled model's exports and variant 8's, ONNX Runtime fp32, no input gate, the same validation "
            "images; each row's threshold and band are the ensemble rule fitted per dataset on these images "
            "(as the default model's build fits it), so sensitivity, specificity and refer share are in-sample; "
            "ROC AUC and ECE do not depend on the rule.",
            "",
            "| model | threshold | dataset | " + " | ".join(COLUMNS) + " |",
            "|---|---|---|" + "---|" * len(COLUMNS),
        ]
        for name, entry in shipped.items():
            for row in entry["rows"]:
                cells = " | ".join(_cell(row["metrics"][c]) for c in COLUMNS)
                lines.append(f"| {name} | {entry['decision']['threshold']:.3f} | {row['dataset']} (n={row['n']}) "
                             f"| {cells} |")  # fmt: skip
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
