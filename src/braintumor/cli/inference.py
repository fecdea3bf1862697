"""``braintumor export`` and ``braintumor predict``: ONNX export (int8 where it holds accuracy) and batch scoring
of files and folders."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from braintumor.cli.common import command, progress
from braintumor.errors import BrainTumorError


def _cmd_export(args: argparse.Namespace) -> int:
    """export run(s) to ONNX (in-graph calibration + Grad-CAM), int8 where it holds accuracy

    Export one run, or several runs as an averaging ensemble, to ONNX with their cards.
    """
    from braintumor.export.onnx import export_run, export_runs

    runs = [Path(r) for r in args.runs]
    out = export_runs(runs, args.out, name=args.name) if len(runs) > 1 else export_run(runs[0], args.out)
    members = [out / r.name for r in runs] if len(runs) > 1 else [out]
    if args.int8 != "off":
        from braintumor.data.splits import read_split
        from braintumor.export.quantize import quantize_if_it_holds, set_default_precision, stratified
        from braintumor.models.export_dir import ExportDir
        from braintumor.training.data import records_for_split

        if not args.data:
            raise BrainTumorError(
                "int8 quantization calibrates on training images: give --data DIR ... (or --int8 off)"
            )
        for run, member in zip(runs, members, strict=True):
            rows, _ = read_split(run / "split.csv")
            parts = records_for_split([str(d) for d in args.data], rows)
            verdict = quantize_if_it_holds(member, stratified(parts["train"], args.calibration_images), parts["val"])
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
    """score files and folders (CSV/JSON, heatmaps, Dask)

    Score images and folders (recursive). Each file gets a status; the run goes on past bad or rejected files and
    exits non-zero only when nothing could be scored. DICOM files are grouped into series (by study and series UID,
    slices in anatomical order) and NIfTI volumes (.nii, .nii.gz) read as axial slices: one row per slice, with
    study_uid, series_uid and slice; --studies FILE writes one row per study (its outcome by the study rule).
    """
    from braintumor.inference.batch import columns, expand_paths, iter_scores, score_with_dask, summarize
    from braintumor.inference.bundled import resolve_model_dir
    from braintumor.inference.predictor import Predictor

    model_dir = resolve_model_dir(args.model)
    predictor = Predictor.load(model_dir, threads=args.threads)
    cam_dir = None if args.no_cam else args.cam_dir
    files = expand_paths(args.paths)
    if not files:
        raise BrainTumorError("no files found under the given paths")
    kinds = _volume_kinds(files)
    images = [f for f in files if kinds[f] is None]
    rows: list[dict[str, Any]] = []
    with progress(len(images), "scoring") as bar:
        if images and args.dask:
            rows = score_with_dask(model_dir, images, args.dask, cam_dir=cam_dir, progress=bar.update)
        elif images:
            rows = list(
                iter_scores(predictor, images, cam_dir=cam_dir, batch_size=args.batch_size, progress=bar.update)
            )
    rows += _score_series(args, predictor, [f for f in files if kinds[f] == "dicom"],
                          [f for f in files if kinds[f] == "nifti"], cam_dir)  # fmt: skip
    if args.dicom_out and images:
        print(f"--dicom-out: {len(images)} non-DICOM file(s) passed over (no header to answer to)", file=sys.stderr)
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
    assessable = sum(r["status"] == "not_assessable" for r in rows)
    if assessable or any(r["status"] == "skipped" for r in rows):
        skipped = sum(r["status"] == "skipped" for r in rows)
        print(f"series: {assessable} slice(s) not assessable, {skipped} file(s) of skipped series", file=sys.stderr)
    print(
        f"scored {s['ok']} of {s['files']} file(s): {s['tumor']} tumor, {s['refer']} to refer, "
        f"{s['no_tumor']} no tumor; "
        f"{s['rejected']} rejected (not brain MRI), {s['out_of_scope']} outside the images the model was validated "
        f"on, {s['error']} unreadable",
        file=sys.stderr,
    )
    return 0 if s["ok"] else 1


def _volume_kinds(files: list[Path]) -> dict[Path, str | None]:
    from braintumor.imaging.series import sniff_volume_or_dicom

    return {f: sniff_volume_or_dicom(f) for f in files}


def _score_series(
    args: argparse.Namespace, predictor: Any, dicoms: list[Path], niftis: list[Path], cam_dir: Path | None
) -> list[dict[str, Any]]:
    """DICOM series and NIfTI volumes, scored in this process (also under --dask): one row per slice."""
    if not dicoms and not niftis and not args.studies:
        return []
    from braintumor.imaging.series import SeriesLimits
    from braintumor.imaging.series_rules import DEFAULT_RULES, SeriesRules
    from braintumor.inference.study import STUDY_COLUMNS, score_studies, slice_rows, study_rows
    from braintumor.interop.study_out import SliceCollector

    rules = SeriesRules.load(args.series_rules) if args.series_rules else SeriesRules.from_dict(DEFAULT_RULES)
    heatmaps = _heatmap_writer(cam_dir) if cam_dir is not None else None
    collect = SliceCollector(read=lambda source: Path(source).read_bytes()) if args.dicom_out else None

    def hook(series: Any, result: Any, image: Any, prediction: Any) -> str | None:
        if collect is not None:
            collect(series, result, image, prediction)
        return heatmaps(series, result, image, prediction) if heatmaps is not None else None

    # Local files: the caps that matter are per slice (ImageLimits); slices are decoded one batch at a time.
    limits = SeriesLimits(max_files=10**7, max_slices=10**7, max_total_bytes=2**50)
    wanted = heatmaps is not None or collect is not None
    run = score_studies(predictor, dicoms, niftis, rules=rules, limits=limits, batch_size=args.batch_size,
                        cam=wanted, on_slice=hook if wanted else None)  # fmt: skip
    if collect is not None:
        _write_series_results(run.studies, collect, args.dicom_out)
    for study in run.studies:
        for skipped in study.skipped:
            name = skipped.series.description or skipped.series.series_uid
            print(f"skipped series {name}: {skipped.reason}", file=sys.stderr)
    if args.studies:
        with args.studies.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=STUDY_COLUMNS)
            writer.writeheader()
            writer.writerows(study_rows(run))
    return slice_rows(run, predictor.class_names)


def _write_series_results(studies: Any, collect: Any, out_dir: Path) -> None:
    """``--dicom-out``: one SR (the series' answer by the study rule) and one heatmap Secondary Capture per
    assessed slice for each scored DICOM series, from this run's answers; one line per series that got none."""
    from braintumor.interop.study_out import write_series_results

    series = files = 0
    for uid, result in write_series_results(studies, collect, out_dir):
        if isinstance(result, str):
            print(f"series {uid}: no DICOM result written: {result}", file=sys.stderr)
            continue
        series += 1
        files += 1 + len(result.captures)
    print(f"wrote {series} DICOM SR(s) and {files - series} Secondary Capture(s) for {series} series to {out_dir}",
          file=sys.stderr)  # fmt: skip


def _heatmap_writer(cam_dir: Path) -> Any:
    from PIL import Image

    from braintumor.imaging.overlay import overlay
    from braintumor.inference.batch import heatmap_name

    cam_dir.mkdir(parents=True, exist_ok=True)

    def write(_series: Any, result: Any, image: Any, prediction: Any) -> str | None:
        if prediction.cam is None:
            return None
        target = cam_dir / f"{heatmap_name(Path(result.ref.source))[:-4]}.slice{result.index:04d}.png"
        Image.fromarray(overlay(image.pixels, prediction.cam)).save(target, compress_level=1)
        return str(target)

    return write


def add_parser(sub: Any) -> None:
    e = command(sub, "export", _cmd_export)
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

    p = command(sub, "predict", _cmd_predict)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--model", type=Path, help="exported model or ensemble folder (default: the bundled model)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--out", type=Path, help="write results here (default: stdout)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--no-cam", action="store_true", help="skip heatmaps")
    cam.add_argument("--cam-dir", type=Path, help="write a heatmap overlay PNG per scan here")
    p.add_argument("--dicom-out", type=Path, metavar="DIR",
                   help="for each scored DICOM series (a lone file is a one-slice series): one Comprehensive SR "
                   "with the series' answer by the study rule, and one heatmap Secondary Capture per assessed "
                   "slice, in its study (written from the files as given: de-identify first if they must not "
                   "carry identity)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, help="cores ONNX Runtime uses (default: all; ensemble members share them)")
    p.add_argument("--dask", metavar="ADDRESS", help="score on a Dask cluster (scheduler address, or 'local')")
    p.add_argument("--studies", type=Path, metavar="FILE", help="write one CSV row per study (DICOM series, NIfTI)")
    p.add_argument("--series-rules", type=Path, metavar="FILE", help="which series to score (JSON/YAML rule file)")
