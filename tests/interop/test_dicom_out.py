"""DICOM outputs: every SR and Secondary Capture written passes dciodvfy, reads back (highdicom, pydicom) with the
values we wrote, references its source, and reintroduces nothing that de-identification stripped.

Inputs are real: pydicom's MR_small and real slices of the seed dataset wrapped as an MR series (built in memory,
never committed), predicted by the bundled model.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import SecondaryCaptureImageStorage

from braintumor.imaging.overlay import overlay
from braintumor.inference.predictor import Prediction, Predictor
from braintumor.interop.answers import Finding, StoredAnswer
from braintumor.interop.dicom_out import (
    CODING_SCHEME,
    NOT_FOR_DIAGNOSIS,
    OUTCOME_CODES,
    AnalysedSlice,
    heatmap_captures,
    model_device_uid,
    structured_report,
    write_dicom_results,
)

from ..dicom_files import IDENTITY, encoded, mr_series
from .conftest import analyse, evaluations, evidence_uids

Validate = Callable[[Path, str], list[str]]


# -- reading back ----------------------------------------------------------------------------------------------
def groups(sr: Any) -> dict[str, Any]:
    """The SR's measurement groups by tracking identifier ("Result", "Slice 1" …), read back by highdicom."""
    if not isinstance(sr, hd.sr.ComprehensiveSR) or not isinstance(sr.content, hd.sr.MeasurementReport):
        buf = io.BytesIO()
        sr.save_as(buf, enforce_file_format=True)
        sr = hd.sr.srread(io.BytesIO(buf.getvalue()))
    return {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}


def measurements(group: Any) -> dict[str, float]:
    return {m.name.value: m.value for m in group.get_measurements()}


def source_uids(group: Any) -> list[str]:
    return [s.referenced_sop_instance_uid for s in group.source_images]


def content_items(ds: Any) -> Iterator[Any]:
    """Every SR content item, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def text_of(sr: Any, concept: str) -> str:
    """The text value of the first TEXT item named DCM ``concept``."""
    for item in content_items(sr):
        name = item.ConceptNameCodeSequence[0]
        if name.CodingSchemeDesignator == "DCM" and name.CodeValue == concept:
            return str(item.TextValue)
    raise AssertionError(f"no content item DCM {concept}")


def our_equipment(ds: Any) -> Any:
    (item,) = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "braintumor"]
    return item


def every_value(ds: Any) -> Iterator[str]:
    """Every element value of ``ds``, its file meta and every nested item, as text."""
    for elem in [*getattr(ds, "file_meta", []), *ds.iterall()]:
        if elem.VR != "SQ" and elem.keyword not in ("PixelData",):
            yield str(elem.value)


def read(path: Path) -> Any:
    return pydicom.dcmread(path)


def check_written(written: Any, dciodvfy: Validate) -> tuple[Any, list[Any]]:
    """dciodvfy every file; read the SR with highdicom and the captures with pydicom."""
    dciodvfy(written.sr, "ComprehensiveSR")
    for path in written.captures:
        dciodvfy(path, "SCImage")
    return hd.sr.srread(written.sr), [read(p) for p in written.captures]


# -- one image ---------------------------------------------------------------------------------------------------
def test_mr_small_writes_a_valid_sr_and_capture_that_reference_it(
    ungated: Predictor, dciodvfy: Validate, tmp_path: Path
) -> None:
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    analysed = analyse(data, ungated)
    source, prediction = analysed.source, analysed.prediction
    written = write_dicom_results([analysed], tmp_path)
    sr, (sc,) = check_written(written, dciodvfy)

    # the SR: the answer, the source, the model, unverified and not for diagnosis
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    assert NOT_FOR_DIAGNOSIS in sr.SeriesDescription
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.PatientID == source.PatientID and str(sr.PatientName) == str(source.PatientName)
    (result,) = groups(sr).values()
    assert evaluations(result)["OUTCOME"] == OUTCOME_CODES[prediction.outcome][0]
    assert measurements(result)["P_TUMOR"] == pytest.approx(prediction.p_tumor, abs=1e-9)
    assert source_uids(result) == [source.SOPInstanceUID]
    assert evidence_uids(sr) == {source.SOPInstanceUID}
    assert result.finding_type.value == "108369006" and result.finding_sites[0].value.value == "12738006"
    assert text_of(sr, "121013") == prediction.model_name  # Device Observer Name
    assert text_of(sr, "121015") == f"{prediction.model_name} {prediction.model_version}"  # Device Observer Model
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == CODING_SCHEME
    equipment = our_equipment(sr)
    assert equipment.ManufacturerModelName == prediction.model_name
    assert prediction.model_version in equipment.SoftwareVersions

    # the capture: the overlay the app shows, in the source's study, a new series, pointing at its source
    assert sc.SOPClassUID == SecondaryCaptureImageStorage and sc.Modality == "OT"
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SeriesInstanceUID not in (source.SeriesInstanceUID, sr.SeriesInstanceUID)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert prediction.cam is not None
    np.testing.assert_array_equal(sc.pixel_array, overlay(analysed.image.pixels, prediction.cam, alpha=0.4))
    assert (
        NOT_FOR_DIAGNOSIS in sc.SeriesDescription and our_equipment(sc).ManufacturerModelName == prediction.model_name
    )


def test_the_model_is_one_device_across_reports(ungated: Predictor) -> None:
    name, version = ungated.name, ungated.version
    assert model_device_uid(name, version) == model_device_uid(name, version)
    assert model_device_uid(name, version) != model_device_uid(name, version + "-next")


@pytest.mark.parametrize(
    ("sop_class", "frame"),
    [(pydicom.uid.EnhancedMRImageStorage, 2), (pydicom.uid.MRImageStorage, None)],
    ids=["enhanced-mr", "single-frame-iod"],
)
def test_a_multi_frame_source_is_referenced_by_the_frame_analysed(
    sop_class: str, frame: int | None, ungated: Predictor, dciodvfy: Validate, tmp_path: Path
) -> None:
    """The reader analyses the middle frame of a multi-frame file: the SR and the capture point at that frame where
    the source's IOD has frames, and at the whole instance where it has not (a legacy MR carrying frames)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([pixels, pixels[::-1], pixels[:, ::-1]]).astype(pixels.dtype).tobytes()
    analysed = analyse(encoded(ds), ungated)
    assert analysed.image.meta.frame_index == 1 and analysed.frame_number == frame
    written = write_dicom_results([analysed], tmp_path)
    sr, (sc,) = check_written(written, dciodvfy)
    (source,) = groups(sr)["Result"].source_images
    assert source.referenced_sop_instance_uid == ds.SOPInstanceUID
    assert source.referenced_frame_numbers == (None if frame is None else [frame])
    assert sc.SourceImageSequence[0].get("ReferencedFrameNumber") == frame
    assert analysed.prediction.cam is not None
    np.testing.assert_array_equal(sc.pixel_array, overlay(analysed.image.pixels, analysed.prediction.cam, alpha=0.4))


# -- a series of real slices ---------------------------------------------------------------------------------------
def test_a_series_reports_its_most_suspicious_slice_and_every_slice(
    analysed_series: list[AnalysedSlice], dciodvfy: Validate, tmp_path: Path
) -> None:
    written = write_dicom_results(analysed_series, tmp_path)
    sr, captures = check_written(written, dciodvfy)
    uids = [s.sop_instance_uid for s in analysed_series]
    predictions = [s.prediction for s in analysed_series]
    assert [p.outcome for p in predictions] == ["tumor", "tumor", "no_tumor"]  # as real_slices picked them
    top = int(np.argmax([p.p_tumor for p in predictions]))

    by_label = groups(sr)
    assert sorted(by_label) == ["Result", "Slice 1", "Slice 2", "Slice 3"]
    result = by_label["Result"]
    assert source_uids(result) == [uids[top]]
    best = predictions[top]
    assert evaluations(result) == {"OUTCOME": "TUMOR", "TUMOR_TYPE": str(best.tumor_type).upper()}
    assert best.tumor_type is not None
    assert measurements(result) == pytest.approx(
        {"P_TUMOR": best.p_tumor, f"P_{best.tumor_type.upper()}": best.type_probs[best.tumor_type]}, abs=1e-9
    )
    for number, (uid, prediction) in enumerate(zip(uids, predictions, strict=True), start=1):
        group = by_label[f"Slice {number}"]
        assert source_uids(group) == [uid]
        assert evaluations(group) == {"OUTCOME": OUTCOME_CODES[prediction.outcome][0]}
        assert measurements(group)["P_TUMOR"] == pytest.approx(prediction.p_tumor, abs=1e-9)
    assert evidence_uids(sr) == set(uids)

    assert len(captures) == 3 and len({sc.SeriesInstanceUID for sc in captures}) == 1
    assert [sc.SourceImageSequence[0].ReferencedSOPInstanceUID for sc in captures] == uids
    assert [int(sc.InstanceNumber) for sc in captures] == [1, 2, 3]
    for sc, analysed in zip(captures, analysed_series, strict=True):
        assert (sc.Rows, sc.Columns) == analysed.image.pixels.shape[:2]
        assert list(sc.PatientOrientation) == ["L", "P"]  # axial: rows run to the patient's left, columns back
        assert [float(v) for v in sc.PixelSpacing] == [0.5, 0.5]
        assert sc.BodyPartExamined == "BRAIN" and "Laterality" not in sc


def test_a_study_answer_given_by_the_caller_is_the_result(
    analysed_series: list[AnalysedSlice], predictor: Predictor, dciodvfy: Validate, tmp_path: Path
) -> None:
    """What a study scorer passes wins over the most suspicious slice; the three outcomes have three codes."""
    rule = predictor.decision
    p_refer = (rule.refer_low + rule.refer_high) / 2
    finding = Finding(rule.outcome(p_refer), p_refer)
    assert finding.outcome == "refer"
    written = write_dicom_results(analysed_series, tmp_path, finding=finding)
    sr, _ = check_written(written, dciodvfy)
    result = groups(sr)["Result"]
    assert evaluations(result) == {"OUTCOME": "REFER"}
    assert measurements(result) == pytest.approx({"P_TUMOR": p_refer})
    assert len({value for value, _ in OUTCOME_CODES.values()}) == 3


# -- de-identification -------------------------------------------------------------------------------------------
def test_writing_from_the_deidentified_source_reintroduces_nothing(
    identified_series: list[Any], analysed_series: list[AnalysedSlice], dciodvfy: Validate, tmp_path: Path
) -> None:
    written = write_dicom_results(analysed_series, tmp_path)
    check_written(written, dciodvfy)
    original = identified_series[0]
    stripped = [
        *IDENTITY.values(),
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.FrameOfReferenceUID,
        *(ds.SOPInstanceUID for ds in identified_series),
        original.StudyDate,
        original.StudyTime,
        original.AccessionNumber,
    ]
    for path in [written.sr, *written.captures]:
        raw = path.read_bytes()
        ds = read(path)
        values = "\n".join(every_value(ds))
        for secret in stripped:
            assert secret.encode() not in raw and secret not in values, f"{secret!r} is back in {path.name}"
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "AccessionNumber"):
            assert not ds.get(keyword), f"{keyword} is not empty in {path.name}"
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod == analysed_series[0].source.DeidentificationMethod
        assert ds.StudyInstanceUID == analysed_series[0].source.StudyInstanceUID


def test_writing_from_an_identified_source_keeps_its_identity(
    identified_series: list[Any], predictor: Predictor
) -> None:
    """The control of the test above: the writers copy patient and study from the source they are given, so a site
    that keeps identifiers (and a PACS round trip) gets an SR filed under the right patient."""
    analysed = [analyse(encoded(ds), predictor) for ds in identified_series]
    sr = structured_report(analysed)
    (sc, *_) = heatmap_captures(analysed)
    for ds in (sr, sc):
        assert str(ds.PatientName) == IDENTITY["PatientName"] and ds.PatientID == IDENTITY["PatientID"]
        assert ds.AccessionNumber == identified_series[0].AccessionNumber
        assert ds.StudyInstanceUID == identified_series[0].StudyInstanceUID
        assert "PatientIdentityRemoved" not in ds


# -- refusals ----------------------------------------------------------------------------------------------------
def test_slices_of_two_studies_are_refused(real_slices: list[np.ndarray], predictor: Predictor) -> None:
    first, second = mr_series(real_slices[:1]), mr_series(real_slices[1:2])
    analysed = [analyse(encoded(first[0]), predictor), analyse(encoded(second[0]), predictor)]
    with pytest.raises(ValueError, match="one study"):
        structured_report(analysed)


def test_a_prediction_without_its_heatmap_cannot_be_captured(
    deidentified_series: list[bytes], predictor: Predictor
) -> None:
    from braintumor.imaging.io import load_image

    image = load_image(deidentified_series[0])
    analysed = AnalysedSlice.from_bytes(deidentified_series[0], image, predictor.predict(image, cam=False))
    with pytest.raises(ValueError, match="cam=True"):
        heatmap_captures([analysed])
    result = groups(structured_report([analysed]))["Result"]  # the SR needs no heatmap
    assert evaluations(result)["OUTCOME"] == OUTCOME_CODES[analysed.prediction.outcome][0]


# -- a kept answer -----------------------------------------------------------------------------------------------
def test_a_kept_answer_writes_what_the_prediction_wrote(analysed_series: list[AnalysedSlice]) -> None:
    """``StoredAnswer`` rebuilt from ``Prediction.as_dict()`` and the map (what the API keeps) gives the same SR
    answer and the same capture pixels as the prediction itself."""
    fresh = analysed_series[0]
    prediction = fresh.prediction
    assert isinstance(prediction, Prediction)
    kept = StoredAnswer.from_dict(prediction.as_dict(), cam=prediction.cam)
    again = AnalysedSlice(fresh.source, fresh.image, kept)
    assert Finding.of(kept) == Finding.of(prediction)
    fresh_group, kept_group = groups(structured_report([fresh]))["Result"], groups(structured_report([again]))["Result"]
    assert evaluations(kept_group) == evaluations(fresh_group)
    assert measurements(kept_group) == pytest.approx(measurements(fresh_group))
    (fresh_sc,), (kept_sc,) = heatmap_captures([fresh]), heatmap_captures([again])
    np.testing.assert_array_equal(kept_sc.pixel_array, fresh_sc.pixel_array)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"outcome": "maybe"}, "no known outcome"),
        ({"p_tumor": "high"}, "not numbers"),
        ({"p_tumor": 1.5}, "between 0 and 1"),
        ({"type_probs": {"glioma": -0.1}}, "between 0 and 1"),
        ({"model": ""}, "does not name its model"),
    ],
)
def test_a_kept_answer_that_is_not_one_is_refused(change: dict[str, Any], message: str) -> None:
    kept = {"outcome": "tumor", "p_tumor": 0.9, "tumor_type": "glioma", "type_probs": {"glioma": 0.8},
            "model": "ensemble", "model_version": "1"}  # fmt: skip
    assert StoredAnswer.from_dict(kept, cam=None).type_probs == {"glioma": 0.8}
    with pytest.raises(ValueError, match=message):
        StoredAnswer.from_dict({**kept, **change}, cam=None)
