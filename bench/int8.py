"""Which int8 recipe holds for the bundled model's members? (issue 17; writes bench/results-int8.md)

For each member of the bundled default model and each recipe below, quantize its fp32 graph with
``braintumor.export.quantize.quantize_export`` (calibrated on a stratified sample of the default split's training
part: every dataset and label), then on the default split's *validation* part compare with fp32:

- tumor / no-tumor accuracy under the member's own decision rule (every validation image) and tumor-type accuracy
  (the images with a type), the two figures ``quantize_if_it_holds`` judges by (drop ≤ 0.5 points);
- speed: int8 against fp32 in interleaved rounds (batch 1 and batch 16, 2 ONNX Runtime threads), the median
  of per-round ratios.

A recipe *holds* for a member when both drops are ≤ 0.5 points and int8 is ≥ 1.5× faster at both batch sizes.
``--ship`` writes into the bundled model, for each member, the int8 graph of the held recipe that loses least
(the card records the verdict and serving loads it by default) and scores the default split's test part per
dataset with the shipped precisions beside fp32. Never tuned on test data. About 20 min on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.data.audit import audit_records
from braintumor.data.datasets import discover_many, is_tumor_label
from braintumor.data.splits import make_split, read_split, write_split
from braintumor.evaluation.by_dataset import figures_by_dataset, markdown_table
from braintumor.export.quantize import (
    DEFAULT_RECIPE,
    QuantRecipe,
    agreement,
    letterboxed,
    probabilities,
    quantize_export,
    quantize_if_it_holds,
    stratified,
)
from braintumor.inference.batch import iter_scores
from braintumor.inference.bundled import bundled_model_dir
from braintumor.inference.members import session
from braintumor.inference.predictor import Predictor
from braintumor.models.export_dir import ExportDir
from braintumor.training.data import records_for_split

sys.path.insert(0, str(Path(__file__).parent))
from inference import Settings, interleaved

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = [DATA / "brain_tumor_dataset", DATA / "br35h", DATA / "brain_tumor_mri_4class"]
THREADS = 2
MAX_DROP, MIN_SPEEDUP = 0.005, 1.5
BACKBONE = QuantRecipe(percentile=99.99, fp32_first_convs=0)
RECIPES = {
    "conv-only, Percentile 99.99 (before)": replace(BACKBONE, scope="conv"),
    "backbone, Percentile 99.99": BACKBONE,
    "backbone, Percentile 99.999": replace(BACKBONE, percentile=99.999),
    "backbone, MinMax": replace(BACKBONE, method="MinMax"),
    "backbone, Entropy": replace(BACKBONE, method="Entropy"),
    "backbone, Percentile 99.99, S8S8": replace(BACKBONE, activations="S8"),
    "backbone, Percentile 99.99, reduce_range": replace(BACKBONE, reduce_range=True),
    "backbone, Percentile 99.99, stem conv fp32": replace(BACKBONE, fp32_first_convs=1),
    "backbone, Percentile 99.999, stem conv fp32 (default)": DEFAULT_RECIPE,
}


def _acc(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {message}", flush=True)


def test_figures(bundled: Path, test: list[Any], start: float) -> list[str]:
    """The bundled model on the test part per dataset, with its shipped precisions and in fp32 throughout."""
    tables: list[str] = []
    for label, precision in (("shipped precisions", None), ("fp32 throughout", "fp32")):
        predictor = Predictor.load(bundled, precision=precision)
        scored = list(iter_scores(predictor, [r.path for r in test]))
        keep = [i for i, row in enumerate(scored) if row["status"] == "ok"]
        y = np.array([is_tumor_label(test[i].label) for i in keep], dtype=int)
        p = np.array([float(scored[i]["p_tumor"]) for i in keep])
        rows = figures_by_dataset([test[i].dataset for i in keep], y, p, predictor.decision)
        members = ", ".join(f"{m.name} {m.precision}" for m in predictor.members)
        tables += [f"**{label}** ({members}; {len(test) - len(keep)} rejected by the gate):", "",
                   markdown_table(rows), ""]  # fmt: skip
        _log(f"test part scored with {label}", start)
    return tables


PRECISION_HEADING = "## Precision (int8)"


def record_on_card(bundled: Path, test_tables: list[str]) -> None:
    """Put the members' int8 verdicts into ensemble.json and MODEL_CARD.md, with the test figures of the
    shipped precisions beside fp32 (the card's main table stays the fp32 one it was written with)."""
    spec_path = bundled / "ensemble.json"
    spec = json.loads(spec_path.read_text())
    doc_path = bundled / "MODEL_CARD.md"
    doc = doc_path.read_text()
    verdicts = {}
    for member in spec["members"]:
        card = ExportDir(bundled / member["path"]).read_card()
        assert card.export is not None
        verdicts[member["name"]] = card.export.quantization
        doc = re.sub(rf"{re.escape(member['name'])} \(int8 default: \w+\)",
                     f"{member['name']} (int8 default: {card.default_precision == 'int8'})", doc)  # fmt: skip
    spec.setdefault("metrics", {})["quantization"] = verdicts
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    section = [
        PRECISION_HEADING,
        "",
        'Serving loads each member\'s int8 graph where its card says so (`Predictor.load(folder, precision="fp32")` '
        "forces fp32). The int8 recipe per member, its validation verdict and speed are in `bench/results-int8.md` "
        "(`python bench/int8.py --threads 1 --ship`; recorded here by `--record`); the decision rule is the one "
        "fitted on fp32 validation scores. "
        "The grouped test part with the shipped precisions and in fp32:",
        "",
        *test_tables,
    ]
    if PRECISION_HEADING in doc:
        head, rest = doc.split(PRECISION_HEADING, 1)
        tail = rest[rest.index("\n## ") :] if "\n## " in rest else ""
        doc = head + "\n".join(section).rstrip() + "\n" + tail
    else:
        head, sep, tail = doc.partition("\n## Intended use")
        doc = head.rstrip() + "\n\n" + "\n".join(section).rstrip() + "\n" + sep + tail
    doc_path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "int8")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-int8.md")
    parser.add_argument("--calibration", type=int, default=128, help="calibration images (stratified)")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--members", nargs="+", help="only these members (default: all)")
    parser.add_argument("--record", action="store_true",
                        help="only score the test part with the shipped precisions, record it on the card")  # fmt: skip
    parser.add_argument("--threads", type=int, default=THREADS, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--ship", action="store_true",
                        help="ship, per member, the held recipe that loses least, into the bundled model")  # fmt: skip
    args = parser.parse_args(argv)
    start = time.perf_counter()
    bundled = bundled_model_dir()
    if bundled is None:
        raise SystemExit("no bundled default model in this checkout")
    args.work.mkdir(parents=True, exist_ok=True)
    split = args.work / "split.csv"
    data = [str(d) for d in DATASETS]
    sha = write_split(make_split(audit_records(discover_many(data)), seed=42), split)
    parts = records_for_split(data, read_split(split)[0])
    calibration, validation = stratified(parts["train"], args.calibration), parts["val"]
    _log(f"split {sha[:12]}: {len(calibration)} calibration, {len(validation)} validation images", start)
    if args.record:
        record_on_card(bundled, test_figures(bundled, parts["test"], start))
        _log("recorded on the model card", start)
        return 0
    settings = replace(Settings.make(quick=False), budget_s=12.0, max_repeats=400)  # more rounds: a noisy machine
    rows: list[str] = []
    held: dict[str, list[str]] = {}
    members = sorted(p for p in ExportDir(bundled).root.iterdir() if (p / "card.json").is_file())
    for member_dir in [m for m in members if not args.members or m.name in args.members]:
        card = ExportDir(member_dir).read_card()
        images = letterboxed(validation, card.input_size)
        fp32 = session(member_dir / "model.onnx", args.threads)
        base = agreement(probabilities(fp32, images), validation, card.class_names, card.decision)
        rows.append(f"| {member_dir.name} | fp32 | {_acc(base['binary'])} | {_acc(base['type'])} | — | — | — | — |")
        for name in args.recipes:
            work = args.work / member_dir.name / name.split(" (")[0].replace(", ", "-").replace(" ", "_")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            shutil.copy2(member_dir / "model.onnx", work / "model.onnx")
            shutil.copy2(member_dir / "card.json", work / "card.json")
            t0 = time.perf_counter()
            int8_path = quantize_export(work, calibration, RECIPES[name])
            quantize_s = time.perf_counter() - t0
            int8 = session(int8_path, args.threads)
            fig = agreement(probabilities(int8, images), validation, card.class_names, card.decision)
            speed = {}
            for batch in (1, 16):
                x = images[:batch]
                calls = {"fp32": functools.partial(fp32.run, ["probs", "cam"], {"image": x}),
                         "int8": functools.partial(int8.run, ["probs", "cam"], {"image": x})}  # fmt: skip
                t = interleaved(calls, settings)
                speed[batch] = t["fp32"].ratio(t["int8"])
            drop_b = (base["binary"] or 0.0) - (fig["binary"] or 0.0)
            drop_t = (base["type"] or 0.0) - (fig["type"] or 0.0)
            ok = max(drop_b, drop_t) <= MAX_DROP + 1e-12 and min(speed.values()) >= MIN_SPEEDUP
            if ok:
                held.setdefault(member_dir.name, []).append((max(drop_b, drop_t), -min(speed.values()), name))
            rows.append(
                f"| {member_dir.name} | {name} | {_acc(fig['binary'])} ({-drop_b * 100:+.2f}) | {_acc(fig['type'])} "
                f"({-drop_t * 100:+.2f}) | {speed[1]:.2f}× | {speed[16]:.2f}× | {quantize_s:.0f} s | "
                f"{'**holds**' if ok else 'no'} |"
            )
            _log(rows[-1], start)
    shipped = []
    for member, options in held.items() if args.ship else ():
        name = min(options)[2]  # the smallest accuracy drop, then the larger speed-up
        verdict = quantize_if_it_holds(bundled / member, calibration, validation, recipe=RECIPES[name])
        if verdict["int8_default"]:
            shipped.append(f"{member} ({name})")
    test_tables = test_figures(bundled, parts["test"], start) if shipped else []
    if test_tables:
        record_on_card(bundled, test_tables)
    lines = [
        "# int8: which recipe holds for the bundled model's members",
        "",
        f"Command: `python bench/int8.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        f"({time.perf_counter() - start:.0f} s). Default split (seed 42, sha {sha[:12]}): {len(calibration)} "
        f"calibration images drawn evenly from every (dataset, label) cell of the training part; "
        f"{len(validation)} validation images. Accuracy: tumor / no-tumor under the member's decision rule on "
        "every validation image, and tumor type on the typed ones (change vs fp32 in points). Speed: fp32 ÷ int8 "
        f"time, median of per-round ratios of interleaved rounds, {args.threads} ONNX Runtime thread(s), probs + CAM. "
        f"A recipe holds when both drops are ≤ {MAX_DROP * 100:.1f} points and int8 is ≥ {MIN_SPEEDUP}× faster "
        "at both batch sizes.",
        "",
        "| member | recipe | tumor/no-tumor acc. | type acc. | speed-up b1 | speed-up b16 | quantize | verdict |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Held: " + ("; ".join(f"{m}: {', '.join(o[2] for o in opts)}" for m, opts in held.items()) or "none") + ". "
        f"Shipped: {', '.join(shipped) if shipped else 'nothing (fp32 stays the default)'}.",
        "",
    ]
    if test_tables:
        lines += ["## The bundled model on the test part, shipped precisions against fp32", "",
                  "Same decision rule (fitted on fp32 validation scores); the default split's test part, which "
                  "chose nothing here.", "", *test_tables]  # fmt: skip
    args.out.write_text("\n".join(lines))
    _log(f"wrote {args.out}", start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
