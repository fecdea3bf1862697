"""Batch scoring: per-file statuses, CSV/JSON output, heatmaps, exit codes, Dask with identical rows."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from braintumor.cli import main
from braintumor.inference.batch import columns, expand_paths, score_paths, score_with_dask
from braintumor.inference.predictor import Predictor
from braintumor.models.decision import OUTCOMES


@pytest.fixture
def archive(tiny_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "study1" / "series2").mkdir(parents=True)
    for i, p in enumerate(sorted((tiny_dataset / "yes").iterdir())[:3]):
        shutil.copy(p, root / "study1" / f"img{i}.jpg")
    for i, p in enumerate(sorted((tiny_dataset / "no").iterdir())[:3]):
        shutil.copy(p, root / "study1" / "series2" / f"IM{i:04d}")  # no extension, as in DICOM archives
    good = (root / "study1" / "img0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(good)
    return root


def test_every_file_gets_a_status_and_the_run_goes_on(smoke_export: Path, archive: Path) -> None:
    predictor = Predictor.load(smoke_export, threads=1)
    rows = score_paths(predictor, [archive], batch_size=4)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == 8 and ".hidden.jpg" not in by_name
    assert by_name["truncated.jpg"]["status"] == "error" and "truncated" in by_name["truncated.jpg"]["reason"]
    assert by_name["notes.txt"]["status"] == "error" and "unsupported" in by_name["notes.txt"]["reason"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6
    for r in ok:
        assert r["outcome"] in ("tumor", "refer", "no_tumor") and 0 <= r["p_tumor"] <= 1
        assert r["p_no_tumor"] + r["p_tumor"] == pytest.approx(1, abs=1e-5)
    assert [r["path"] for r in rows] == [str(p) for p in expand_paths([archive])]


def test_cli_csv_json_heatmaps_and_exit_codes(
    smoke_export: Path, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    cams = tmp_path / "cams"
    code = main(["predict", str(archive), "--model", str(smoke_export), "--out", str(out), "--cam-dir", str(cams)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == columns(["no_tumor", "tumor"])
    assert list(rows[0])[:6] == ["path", "status", "reason", "outcome", "p_tumor", "p_no_tumor"]
    assert sum(r["status"] == "ok" for r in rows) == 6
    heatmaps = [r["heatmap"] for r in rows if r["status"] == "ok"]
    assert all(Path(h).is_file() for h in heatmaps) and len(set(heatmaps)) == 6
    src = next(r for r in rows if r["status"] == "ok")
    assert Image.open(src["heatmap"]).size == Image.open(src["path"]).size
    err = capsys.readouterr().err
    assert "scored 6 of 8" in err
    # one outcome per scan: the summary's three counts add up to what was scored (issue 14 item 1)
    counts = re.search(r"(\d+) tumor, (\d+) to refer, (\d+) no tumor", err)
    assert counts is not None and sum(map(int, counts.groups())) == 6
    assert [int(n) for n in counts.groups()] == [sum(r["outcome"] == o for r in rows) for o in OUTCOMES]

    assert main(["predict", str(archive), "--model", str(smoke_export), "--format", "json", "--no-cam"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 8 and data[0]["heatmap"] == ""

    assert main(["predict", str(archive / "notes.txt"), "--model", str(smoke_export)]) == 1  # nothing scored
    assert main(["predict", str(tmp_path / "missing-folder"), "--model", str(smoke_export)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert main(["predict", str(archive), "--model", str(tmp_path)]) == 2  # not a model folder


@pytest.mark.slow
def test_dask_local_cluster_gives_identical_rows(smoke_export: Path, archive: Path) -> None:
    local = score_paths(Predictor.load(smoke_export, threads=1), [archive])
    distributed = score_with_dask(smoke_export, [archive], "local", chunk=3)
    assert distributed == local


def test_csv_to_stdout(smoke_export: Path, archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(archive / "study1"), "--model", str(smoke_export), "--no-cam"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
