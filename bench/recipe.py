"""Choose the default model's recipe on validation data: each ingredient's effect, per dataset.

    python bench/recipe.py                  # writes bench/results-recipe.md (runs in runs/recipe/)

Every variant trains MobileNetV2 (ImageNet) on the train part of the default model's grouped split (all three
shared datasets, seed 42) and is scored on its *validation* part only — the test part stays untouched for the
model card. Variants add one ingredient at a time to the previous default recipe:

1. ``typed only`` — the old recipe: yes/no tumors dropped (no type), shuffled epochs, frozen backbone;
2. ``+ partial labels`` — untyped tumors train the tumor / no-tumor decision, −log(1 − p(no tumor));
3. ``+ balanced sampling`` — draws ∝ n_cell^-0.5 over (dataset, class) cells (and ^-1.0);
4. ``+ intensity/blur augmentation``;
5. ``+ fine-tuning`` — the top 30% of the backbone on cached activations of 8 views.

The table shows, per variant, the validation figures per dataset (tumor vs no tumor at the validation
threshold): what each step changes where.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from braintumor.data.audit import audit_records
from braintumor.data.datasets import discover_many
from braintumor.data.splits import make_split, write_split
from braintumor.evaluation.by_dataset import COLUMNS
from braintumor.evaluation.evaluate import evaluate_runs
from braintumor.training.config import AugmentConfig, TrainConfig
from braintumor.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DIRS = [str(DATA / "brain_tumor_dataset"), str(DATA / "br35h"), str(DATA / "brain_tumor_mri_4class")]
AUG = AugmentConfig(brightness=0.2, contrast=0.2, gamma=0.3, blur=0.3)
BASE = {"arch": "mobilenet_v2", "task": "multiclass", "cached_views": 4, "fine_tune": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "typed only (old recipe)": {"label_map": {"no": "notumor", "yes": ""}},
    "+ partial labels": {"label_map": {"no": "notumor", "yes": "tumor"}},
    "+ balanced sampling (power 0.5)": {"label_map": {"no": "notumor", "yes": "tumor"}, "sampling": "balanced",
                                        "balance_power": 0.5},
    "+ balanced sampling (power 1.0)": {"label_map": {"no": "notumor", "yes": "tumor"}, "sampling": "balanced",
                                        "balance_power": 1.0},
    "+ intensity/blur augmentation (power 0.5)": {"label_map": {"no": "notumor", "yes": "tumor"},
                                                  "sampling": "balanced", "balance_power": 0.5, "augment": AUG},
    "+ fine-tuning (8 views, top 30%)": {"label_map": {"no": "notumor", "yes": "tumor"}, "sampling": "balanced",
                                         "balance_power": 0.5, "augment": AUG, "cached_views": 8, "fine_tune": True,
                                         "fine_tune_epochs": 10, "fine_tune_lr": 1e-4},
}  # fmt: skip


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
    for k, (name, overrides) in enumerate(VARIANTS.items(), start=1):
        run = args.work / _slug(name)
        if args.only and k not in args.only:
            continue
        if not (run / "checkpoint.pt").is_file() or args.only:
            cfg = TrainConfig(**{**BASE, **overrides})
            t0 = time.perf_counter()
            train(cfg, DIRS, run, split=split, progress=False, log=lambda _: None)
            seconds = time.perf_counter() - t0
        else:
            seconds = results.get(name, {}).get("seconds", float("nan"))
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
    for name in VARIANTS:
        if name not in results:
            continue
        for row in results[name]["rows"]:
            cells = " | ".join(_cell(row["metrics"][c]) for c in COLUMNS)
            lines.append(f"| {name} | {row['dataset']} (n={row['n']}) | {cells} | {results[name]['seconds']:.0f} |")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
