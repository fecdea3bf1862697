"""Study scoring: the study rule on its own, then synthetic studies of real slices through the bundled model
(per-slice results equal to the single-image path, edge slices not assessable, the rule applied to what the model
said, skipped series reported, NIfTI volumes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from braintumor.imaging.io import load_image
from braintumor.imaging.series_rules import SeriesRules
from braintumor.inference.predictor import Prediction, Predictor
from braintumor.inference.study import VALIDATION_NOTE, StudyRule, score_series, score_studies, study_result

from ..dicom_files import mr_series
from ..studies import gray_slices, nifti_volume, write


# -- the rule ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("outcomes", "expected", "said"),
    [
        (["no_tumor", "tumor", "tumor", "no_tumor"], "tumor", "slices 1–2"),
        (["tumor", None, "tumor"], "tumor", "slices 0–2"),  # a not-assessable slice does not break a run
        (["tumor", "no_tumor", "tumor"], "refer", "2 tumor slice(s), none 2 in a row"),
        (["no_tumor", "refer", "no_tumor"], "refer", "1 slice(s) in the referral band"),
        (["no_tumor", "no_tumor", None], "no_tumor", "1 not assessable"),
        (["no_tumor", None, None, None], "refer", "only 1 of 4 slices"),
        ([None, None], None, "no slice could be assessed"),
        (["tumor"], "tumor", "1 consecutive"),  # a one-slice series needs its one slice
    ],
)
def test_study_rule(outcomes: list[str | None], expected: str | None, said: str) -> None:
    outcome, reason = StudyRule().decide(outcomes)  # type: ignore[arg-type]
    assert outcome == expected and said in reason


def test_study_rule_parameters() -> None:
    three = StudyRule(consecutive=3, min_coverage=0.9)
    assert three.decide(["tumor", "tumor", "no_tumor", "no_tumor"])[0] == "refer"
    assert three.decide(["tumor", "tumor", "tumor", "no_tumor"])[0] == "tumor"
    assert three.decide(["no_tumor"] * 8 + [None] * 2)[0] == "refer"  # 80% assessed < 90%
    assert three.as_dict() == {"consecutive": 3, "min_coverage": 0.9}


# -- real slices through the bundled model ----------------------------------------------------------------
def answered(predictor: Predictor, files: list[Path], outcome: str, n: int) -> list[Path]:
    """The first ``n`` of ``files`` whose 256² gray version the single-image path answers with ``outcome``."""
    from braintumor.imaging.types import ImageMeta, LoadedImage

    chosen = []
    for f, pixels in zip(files, gray_slices(files, 256), strict=True):
        result = predictor.predict_batch([LoadedImage(pixels, ImageMeta("png", (256, 256), "L", 8))], cam=False)[0]
        if isinstance(result, Prediction) and result.outcome == outcome:
            chosen.append(f)
        if len(chosen) == n:
            return chosen
    pytest.skip(f"fewer than {n} slices answered {outcome}")


@pytest.fixture(scope="module")
def slices(bundled: Predictor, shared_data: Path) -> dict[str, list[np.ndarray]]:
    seed = shared_data / "brain_tumor_dataset"
    tumor = answered(bundled, sorted((seed / "yes").iterdir())[:40], "tumor", 3)
    clear = answered(bundled, sorted((seed / "no").iterdir())[:40], "no_tumor", 4)
    return {"tumor": gray_slices(tumor, 256), "no_tumor": gray_slices(clear, 256)}


def test_a_series_scored_slice_by_slice(
    bundled: Predictor, slices: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    """An axial series (shuffled files): a blank edge slice, two clear slices, three tumor slices, two clear."""
    blank = np.zeros((256, 256), np.uint8)
    stack = [blank, *slices["no_tumor"][:2], *slices["tumor"], *slices["no_tumor"][2:]]
    files = write(mr_series(stack), tmp_path / "series")
    run = score_studies(bundled, files, batch_size=3)
    assert not run.problems and len(run.studies) == 1
    study = run.studies[0]
    assert study.note == VALIDATION_NOTE and "2-D slices, not on studies" in study.note
    (series,) = study.series
    assert [s.index for s in series.slices] == list(range(8))
    assert [s.ref.position for s in series.slices] == [5.0 * k for k in range(1, 9)]

    edge = series.slices[0]
    assert edge.status == "not_assessable" and edge.reason and edge.p_tumor is None and edge.outcome is None
    by_position = {r.ref.position: r for r in series.slices}
    for path in files:  # each slice's answer is the single-image path's answer for that file
        image = load_image(path)
        position = float(pydicom.dcmread(path).ImagePositionPatient[2])
        got = by_position[position]
        if got.status != "ok":
            continue
        expected = bundled.predict(image, cam=False)
        assert got.outcome == expected.outcome and got.p_tumor == pytest.approx(expected.p_tumor, abs=1e-6)
    outcomes = [s.outcome for s in series.slices]
    assert outcomes[3:6] == ["tumor"] * 3 and set(outcomes[1:3] + outcomes[6:]) == {"no_tumor"}
    assert series.outcome == "tumor" and study.outcome == "tumor" and "slices 3–4" in series.reason
    assert series.curve[0] is None and len(series.curve) == 8
    top = [series.slices[i].p_tumor for i in series.top_slices]
    assert set(series.top_slices[:3]) == {3, 4, 5} and top == sorted(top, reverse=True)
    data = study.as_dict()
    assert data["outcome"] == "tumor" and data["series"][0]["p_tumor_curve"][0] is None


def test_one_tumor_slice_is_referred_and_clear_series_are_no_tumor(
    bundled: Predictor, slices: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    clear = score_studies(bundled, write(mr_series(slices["no_tumor"]), tmp_path / "clear")).studies[0]
    assert clear.outcome == "no_tumor" and "all 4 assessed slices" in clear.reason
    single = [*slices["no_tumor"][:2], slices["tumor"][0], *slices["no_tumor"][2:]]
    one = score_studies(bundled, write(mr_series(single), tmp_path / "one")).studies[0]
    assert one.outcome == "refer" and "1 tumor slice(s), none 2 in a row" in one.reason
    # several series: the study takes the most severe
    both = study_result("s", "", [*clear.series, *one.series], [], StudyRule())
    assert both.outcome == "refer"


def test_skipped_series_and_study_grouping(
    bundled: Predictor, slices: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    main = mr_series(slices["no_tumor"], description="T2 AX")
    scout = mr_series(slices["no_tumor"][:2], description="SCOUT")
    other_study = mr_series(slices["tumor"], description="T1 AX")
    for ds in scout:
        ds.StudyInstanceUID = main[0].StudyInstanceUID
    files = write(main, tmp_path / "a") + write(scout, tmp_path / "b") + write(other_study, tmp_path / "c")
    run = score_studies(bundled, files)
    assert len(run.studies) == 2
    first = next(s for s in run.studies if s.study_uid == main[0].StudyInstanceUID)
    assert [k.series.description for k in first.skipped] == ["SCOUT"]
    assert "SeriesDescription SCOUT is excluded" in first.skipped[0].reason
    assert [s.series.description for s in first.series] == ["T2 AX"]

    only_ct = SeriesRules.from_dict({"selections": [{"conditions": {"Modality": "CT"}}]})
    none = score_studies(bundled, files[:4], rules=only_ct).studies[0]
    assert none.outcome is None and none.reason == "no selected series" and len(none.skipped) == 1


def test_a_nifti_volume_scored_per_slice(
    bundled: Predictor, slices: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    stack = [np.zeros((256, 256), np.uint8), *slices["tumor"], *slices["no_tumor"][:2]]
    path = nifti_volume(stack, np.eye(4), tmp_path / "volume.nii.gz")
    run = score_studies(bundled, nifti_files=[path])
    (study,) = run.studies
    (series,) = study.series
    assert len(series.slices) == 6 and series.slices[0].status == "not_assessable"
    assert all(s.status == "ok" for s in series.slices[1:])
    assert study.outcome == StudyRule().decide([s.outcome for s in series.slices])[0]

    broken = tmp_path / "broken.nii"
    broken.write_bytes(path.read_bytes()[:100])
    assert score_studies(bundled, nifti_files=[broken]).problems[0].source == str(broken)


def test_heatmaps_through_the_slice_hook(
    bundled: Predictor, slices: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    from braintumor.imaging.series import read_dicom_series

    (series,), _ = read_dicom_series(write(mr_series(slices["tumor"][:2]), tmp_path / "s"))
    seen: list[tuple[int, tuple[int, ...]]] = []

    def hook(_series, result, image, prediction):  # type: ignore[no-untyped-def]
        assert prediction.cam is not None and prediction.cam.shape == image.pixels.shape
        seen.append((result.index, prediction.cam.shape))
        return f"map{result.index}.png"

    result = score_series(bundled, series, cam=True, on_slice=hook)
    assert [s.heatmap for s in result.slices] == ["map0.png", "map1.png"] and len(seen) == 2


# -- the CLI ----------------------------------------------------------------------------------------------
def test_cli_predict_volume_and_dicom_folder(
    bundled: Predictor, slices: dict[str, list[np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``braintumor predict volume.nii.gz`` writes one row per slice; a DICOM folder is grouped into series, a
    scout skipped with its reason, and ``--studies`` writes one row per study."""
    import csv

    from braintumor.cli import main

    volume = nifti_volume([*slices["tumor"], *slices["no_tumor"][:2]], np.eye(4), tmp_path / "volume.nii.gz")
    out = tmp_path / "rows.csv"
    assert main(["predict", str(volume), "--out", str(out), "--no-cam", "--threads", "1"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and [r["slice"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert all(r["path"] == str(volume) and r["status"] in ("ok", "not_assessable") for r in rows)

    main_series = mr_series(slices["no_tumor"], description="T2 AX")
    scout = mr_series(slices["no_tumor"][:2], description="SCOUT")
    for ds in scout:
        ds.StudyInstanceUID = main_series[0].StudyInstanceUID
    folder = tmp_path / "dicom"
    write(main_series, folder / "t2")
    write(scout, folder / "scout")
    studies, cams = tmp_path / "studies.csv", tmp_path / "cams"
    argv = ["predict", str(folder), "--out", str(out), "--studies", str(studies), "--cam-dir", str(cams)]
    assert main([*argv, "--threads", "1"]) == 0
    rows = list(csv.DictReader(out.open()))
    scored = [r for r in rows if r["status"] != "skipped"]
    assert [r["slice"] for r in scored] == ["0", "1", "2", "3"]
    assert {r["series_uid"] for r in scored} == {main_series[0].SeriesInstanceUID}
    assert all(Path(r["heatmap"]).is_file() for r in scored if r["status"] == "ok")
    assert [r["status"] for r in rows].count("skipped") == 2
    (study,) = list(csv.DictReader(studies.open()))
    assert study["study_uid"] == main_series[0].StudyInstanceUID and study["outcome"] in ("tumor", "refer", "no_tumor")
    assert study["slices"] == "4" and "SCOUT" in study["skipped_series"] and "2-D slices" in study["note"]
    assert "skipped series SCOUT" in capsys.readouterr().err

    bad_rules = tmp_path / "rules.json"
    bad_rules.write_text('{"selections": []}')
    assert main([*argv, "--series-rules", str(bad_rules)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("braintumor: error: series rules") and len(err.strip().splitlines()) == 1
