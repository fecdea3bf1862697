"""The command line: help, data info/audit/split, one-line errors and exit codes, the installed script."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor import __version__
from braintumor.cli import build_parser, main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Call ``main`` in-process; return (exit code, stdout, stderr). ``SystemExit`` counts as a return."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("braintumor: error: ")
    assert len(lines[0]) > len("braintumor: error: ")
    assert "Traceback" not in err


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command path of the parser, e.g. ("data",), ("data", "audit")."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(command_paths(sub, (*prefix, name)))
    return paths


# -- help and usage --------------------------------------------------------------------------------------


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "data" in out and "usage: braintumor" in out


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = command_paths(build_parser())
    assert {("data",), ("data", "info"), ("data", "audit"), ("data", "split")} <= set(paths)
    for path in paths:
        code, out, _ = run_cli(capsys, *path, "--help")
        assert code == 0, path
        assert out.startswith("usage: braintumor " + " ".join(path)), path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"braintumor {__version__}"


@pytest.mark.parametrize("argv", [(), ("data",), ("data", "nope"), ("data", "audit"), ("data", "split", "x")])
def test_bad_usage_exits_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "usage:" in err and "Traceback" not in err


# -- data info -------------------------------------------------------------------------------------------


def test_data_info(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    png = tmp_path / "scan.jpg"
    Image.fromarray(np.full((20, 30), 9, np.uint8)).save(png, "PNG")
    code, out, _ = run_cli(capsys, "data", "info", png, get_testdata_file("MR_small.dcm"))
    assert code == 0
    first, second = (json.loads(line) for line in out.strip().splitlines())
    assert (first["format"], first["width"], first["height"], first["gray"]) == ("png", 30, 20, True)
    assert first["path"] == str(png)
    assert second["format"] == "dicom" and second["modality"] == "MR"
    assert second["dicom"]["Modality"] == "MR"


def test_data_info_on_a_non_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    code, out, err = run_cli(capsys, "data", "info", text)
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["path"] == str(text)
    assert info["error"] and "\n" not in info["error"]
    assert "Traceback" not in err


def test_data_info_keeps_going_after_a_bad_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(good)
    code, out, _ = run_cli(capsys, "data", "info", tmp_path / "missing.png", good)
    assert code == 2
    missing, ok = (json.loads(line) for line in out.strip().splitlines())
    assert "not found" in missing["error"]
    assert ok["format"] == "png" and "error" not in ok


# -- data audit / split on the real seed dataset ---------------------------------------------------------


def dataset_row(text: str, name: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return line.split()


@pytest.mark.slow
def test_data_audit_text_and_groups_csv(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    out_csv = tmp_path / "groups.csv"
    code, out, err = run_cli(capsys, "data", "audit", shared_data / "brain_tumor_dataset", "--out", out_csv)
    assert code == 0, err
    assert "Audited 253 files in 1 folder(s)" in out
    _, files, distinct, exact, *_ = dataset_row(out, "brain_tumor_dataset")
    assert (files, distinct, exact) == ("253", "228", "25")
    assert "Leakage: no duplicate group straddles splits." in out
    assert str(out_csv) in out

    with out_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 253
    assert len({row["relative_path"] for row in rows}) == 253
    assert {"group", "group_size", "sha256", "content", "phash", "conflict", "leak", "error"} <= set(rows[0])
    sizes: dict[str, int] = defaultdict(int)
    for row in rows:
        sizes[row["group"]] += 1
    assert all(int(row["group_size"]) == sizes[row["group"]] for row in rows)
    assert len({row["sha256"] for row in rows}) == 228


@pytest.mark.slow
def test_data_audit_json(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    code, out, _ = run_cli(capsys, "data", "audit", shared_data / "brain_tumor_dataset", "--format", "json")
    assert code == 0
    report = json.loads(out)
    ds = report["summary"]["datasets"]["brain_tumor_dataset"]
    assert (ds["files"], ds["distinct_contents"]) == (253, 228)
    assert report["summary"]["leaking_groups"] == 0
    assert report["groups"] and all(len(g["members"]) > 1 for g in report["groups"])
    assert len(report["groups"]) == report["summary"]["near_duplicate_groups"]


@pytest.mark.slow
def test_data_split_then_audit_with_the_split(
    capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path
) -> None:
    seed_dir = shared_data / "brain_tumor_dataset"
    split_csv = tmp_path / "split.csv"
    code, out, err = run_cli(capsys, "data", "split", seed_dir, "--out", split_csv, "--folds", "5")
    assert code == 0, err
    assert "wrote" in out and "folds: 5" in out
    with split_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 253
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    assert {row["fold"] for row in rows if row["split"] == "test"} == {""}
    assert {row["fold"] for row in rows if row["split"] != "test"} == {"0", "1", "2", "3", "4"}
    test_line = next(line for line in out.splitlines() if line.startswith("test"))
    assert abs(int(test_line.split()[1]) - 51) <= 6

    code, out, _ = run_cli(capsys, "data", "audit", seed_dir, "--split", split_csv, "--format", "json")
    assert code == 0
    assert json.loads(out)["summary"]["leaking_groups"] == 0
    code, out, _ = run_cli(capsys, "data", "audit", seed_dir, "--split", split_csv)
    assert code == 0
    assert "Leakage: no duplicate group straddles splits." in out

    # Tamper: put two members of one duplicate group on different sides -> the audit must say so.
    by_group: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    members = next(m for m in by_group.values() if len(m) > 1)
    members[0]["split"] = "train"
    members[1]["split"] = "test"
    tampered = tmp_path / "tampered.csv"
    with tampered.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    code, out, _ = run_cli(capsys, "data", "audit", seed_dir, "--split", tampered)
    assert code == 0
    assert "Leakage: 1 group(s) straddle splits" in out


# -- errors ----------------------------------------------------------------------------------------------


def test_missing_dataset_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in ("audit", "split"):
        extra = ["--out", tmp_path / "x.csv"] if command == "split" else []
        code, out, err = run_cli(capsys, "data", command, tmp_path / "missing", *extra)
        assert code == 2
        assert out == ""
        assert_one_line_error(err)
        assert "missing" in err


def test_bad_split_options_and_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for label, seed in (("yes", 1), ("yes", 2), ("no", 3), ("no", 4)):
        path = root / label / f"{seed}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
    out_csv = tmp_path / "split.csv"

    code, _, err = run_cli(capsys, "data", "split", root, "--out", out_csv, "--folds", "1", "--workers", "1")
    assert code == 2
    assert_one_line_error(err)
    code, _, err = run_cli(capsys, "data", "split", root, "--out", out_csv, "--val", "0.6", "--test", "0.5")
    assert code == 2
    assert_one_line_error(err)

    bad_split = tmp_path / "bad.csv"
    bad_split.write_text("key,split\nds/yes/1.png,train\n")
    code, _, err = run_cli(capsys, "data", "audit", root, "--split", bad_split)
    assert code == 2
    assert_one_line_error(err)
    code, _, err = run_cli(capsys, "data", "audit", root, "--split", tmp_path / "nope.csv")
    assert code == 2
    assert_one_line_error(err)

    code, _, err = run_cli(capsys, "data", "split", root, "--out", tmp_path / "no-such-dir" / "split.csv")
    assert code == 2
    assert_one_line_error(err)


def console_script() -> Path:
    return Path(sys.executable).parent / "braintumor"


def test_installed_console_script_fails_cleanly(tmp_path: Path) -> None:
    script = console_script()
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    text = tmp_path / "scan.dcm"
    text.write_text("hello")

    info = subprocess.run(
        [str(script), "data", "info", str(text)], capture_output=True, text=True, timeout=120, check=False
    )
    assert info.returncode == 2
    assert json.loads(info.stdout)["error"]
    assert "Traceback" not in info.stderr

    audit = subprocess.run(
        [str(script), "data", "audit", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 2
    assert audit.stdout == ""
    assert "Traceback" not in audit.stderr
    assert audit.stderr.startswith("braintumor: error: ")
    assert len(audit.stderr.strip().splitlines()) == 1


def test_a_bad_environment_default_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRAINTUMOR_PORT", "abc")
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip().startswith("braintumor ")
    assert main(["app"]) == 2
    assert capsys.readouterr().err.strip() == "braintumor: error: BRAINTUMOR_PORT must be a whole number, not 'abc'"


# -- explain without a torch checkpoint (issue 14 item 2) ----------------------------------------------------
def test_explain_with_the_bundled_model(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    """``braintumor explain IMAGE --out heatmap.png`` as the README shows it: the bundled ensemble's in-graph map."""
    from braintumor.inference.bundled import bundled_model_dir

    if bundled_model_dir() is None:
        pytest.skip("this installation carries no bundled model")
    scan = shared_data / "brain_tumor_dataset" / "yes" / "Y1.jpg"
    out, raw = tmp_path / "heatmap.png", tmp_path / "map.npy"
    code, stdout, err = run_cli(capsys, "explain", scan, "--out", out, "--raw", raw, "--threads", "1")
    assert code == 0, err
    line = json.loads(stdout)
    assert line["outcome"] in ("tumor", "refer", "no_tumor") and 0 <= line["p_tumor"] <= 1
    assert len(line["members"]) >= 1 and line["heatmap"] == str(out)
    with Image.open(scan) as original, Image.open(out) as heat:
        assert heat.size == original.size and heat.mode == "RGB"
        drawn = np.asarray(heat, dtype=np.int16)
        gray = np.asarray(original.convert("RGB"), dtype=np.int16)
    assert np.abs(drawn - gray).mean() > 2  # the map is really drawn on the scan
    cam = np.load(raw)
    assert cam.shape == (original.size[1], original.size[0]) and cam.min() >= 0 and cam.max() <= 1 + 1e-6


def test_explain_with_any_export_and_its_limits(
    capsys: pytest.CaptureFixture[str], smoke_export: Path, tmp_path: Path
) -> None:
    scan = tmp_path / "scan.png"
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:160, :128]
    brain = ((((yy - 80) / 70) ** 2 + ((xx - 64) / 55) ** 2) < 1) * (120 + 40 * rng.random((160, 128)))
    Image.fromarray(brain.astype(np.uint8)).save(scan)
    out = tmp_path / "heatmap.png"
    code, stdout, err = run_cli(capsys, "explain", scan, "--model", smoke_export, "--out", out)
    assert code == 0, err
    line = json.loads(stdout)
    assert len(line["members"]) == 1 and line["explained"].startswith("the predicted class")
    assert Image.open(out).size == (128, 160)
    code, _, err = run_cli(capsys, "explain", scan, "--model", smoke_export, "--out", out, "--method", "gradcam++")
    assert code != 0 and "--run" in err
    assert_one_line_error(err)
    code, _, err = run_cli(capsys, "explain", scan, "--model", tmp_path, "--out", out)
    assert code != 0
    assert_one_line_error(err)


def test_predict_writes_dicom_results_for_dicom_inputs(
    capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path
) -> None:
    """``braintumor predict DIR --dicom-out DIR``: a 3-slice series gets one SR (the series' answer by the study
    rule, referencing all 3 instances) and one Secondary Capture per slice, from the one scoring run; a JPEG beside
    it is scored but gets no DICOM result (it has no header to answer to)."""
    import pydicom

    from braintumor.inference.bundled import bundled_model_dir

    from .dicom_files import mr_series

    if bundled_model_dir() is None:
        pytest.skip("this installation carries no bundled model")
    jpg = shared_data / "brain_tumor_dataset" / "yes" / "Y1.jpg"
    slices = [np.asarray(Image.open(jpg).convert("L"))] * 3
    sources = mr_series(slices)
    scans = tmp_path / "scans"
    scans.mkdir()
    for i, source in enumerate(sources):
        source.save_as(scans / f"scan{i}.dcm", enforce_file_format=True)
    (scans / "Y1.jpg").write_bytes(jpg.read_bytes())
    out = tmp_path / "dicom"
    code, _, err = run_cli(capsys, "predict", scans, "--out", tmp_path / "rows.csv", "--dicom-out", out)
    assert code == 0, err
    assert "wrote 1 DICOM SR(s) and 3 Secondary Capture(s) for 1 series" in err
    assert "1 non-DICOM file(s) passed over" in err
    [sr_path] = sorted(out.glob("SR_*.dcm"))
    sc_paths = sorted(out.glob("SC_*.dcm"))
    sr, scs = pydicom.dcmread(sr_path), [pydicom.dcmread(p) for p in sc_paths]
    assert sr.Modality == "SR" and sr.VerificationFlag == "UNVERIFIED" and len(scs) == 3
    assert {sr.StudyInstanceUID, *(sc.StudyInstanceUID for sc in scs)} == {sources[0].StudyInstanceUID}
    assert all(sc.SeriesInstanceUID != sources[0].SeriesInstanceUID for sc in scs)
    referenced = {item.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                  for series in s.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}  # fmt: skip
    assert referenced == {s.SOPInstanceUID for s in sources}


def test_the_ui_takes_study_uploads_as_large_as_the_api() -> None:
    """``braintumor ui`` passes the API's study cap to Streamlit (whose own default is 200 MB per file)."""
    from braintumor.cli.app import _study_upload_mb
    from braintumor.errors import BrainTumorError

    assert _study_upload_mb(None) == 512 and _study_upload_mb("700.5") == 701
    for bad in ("lots", "0", "-3", "1e9"):
        with pytest.raises(BrainTumorError, match="BRAINTUMOR_MAX_STUDY_MB"):
            _study_upload_mb(bad)
