"""Choose the default model's recipe on validation data: each ingredient's effect, per dataset.

    python bench/recipe.py                  # writes bench/results-recipe.md (runs in runs/recipe/)

Every variant trains MobileNetV2 (ImageNet) on the train part of the default model's grouped split (all three
shared datasets, seed 42) and is scored on its *validation* part only — the test part stays untouched for the
model card. Variants add one ingredient at a time to the previous default recipe:

1. ``typed only`` — the old recipe: yes/no tumors dropped (no type), shuffled epochs, frozen backbone;
2. ``+ partial labels`` — untyped tumors train the tumor / no-tumor decision, −log(1 − p(no tumor));
3. ``+ balanced sampling`` — draws ∝ n_cell^-0.5 over (dataset, class) cells (and ^-1.0);
4. ``+ intensity/blur augmentation``;
5. ``+ balanced over sources`` — cells are (the datasets an image's duplicate group spans, class);
6. ``+ fine-tuning`` — the bundled recipe: the top half of the backbone on cached activations of 12 views
   (the default model's own MobileNetV2 run, reused from ``runs/default`` when present).

The table shows, per variant, the validation figures per dataset (tumor vs no tumor at the validation
threshold): what each step changes where.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

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
#: The last row: the bundled recipe itself (fine-tuning the top half on 12 cached views), MobileNetV2.
FULL = "+ fine-tuning (the bundled recipe)"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()[:48]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "recipe")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-recipe.md")
    parser.add_argument("--only", nargs="+", type=int, help="variant numbers (1-based) to (re)train")
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
    for k, (name, cfg, run) in enumerate(plans, start=1):
        if args.only and k not in args.only:
            continue
        if not (run / "checkpoint.pt").is_file() or args.only:
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
    write(results, args.out)
    return 0


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
    for name in [*VARIANTS, FULL]:
        if name not in results:
            continue
        for row in results[name]["rows"]:
            cells = " | ".join(_cell(row["metrics"][c]) for c in COLUMNS)
            lines.append(f"| {name} | {row['dataset']} (n={row['n']}) | {cells} | {results[name]['seconds']:.0f} |")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
