"""Series reading from synthetic studies built of real slices: grouping, ordering by geometry (shuffled files,
gaps in InstanceNumber, oblique stacks), multi-frame objects, series selection with reasons, NIfTI orientation,
and the limits."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from braintumor.errors import ImageTooLargeError, InvalidRequestError, UnsupportedImageError
from braintumor.imaging.nifti import read_nifti
from braintumor.imaging.series import SeriesLimits, read_dicom_series, sniff_volume_or_dicom
from braintumor.imaging.series_rules import DEFAULT_RULES, SeriesRules

from ..dicom_files import IDENTITY, mr_series
from ..studies import enhanced_mr, nifti_volume, real_slices, same_slice, write


@pytest.fixture
def study(shared_data: Path, tmp_path: Path) -> dict[str, object]:
    """A study of real slices: a 6-slice axial MR series (shuffled files, InstanceNumbers with gaps and in
    reverse of the anatomy), a 3-slice scout, a CT series, an enhanced MR object, and two non-DICOM files."""
    pixels = real_slices(shared_data, 6)
    series = mr_series(pixels, description="T1 AX")
    study_uid = series[0].StudyInstanceUID
    for k, ds in enumerate(series):
        ds.InstanceNumber = 100 - 7 * k  # gaps, and decreasing while z increases
    scout = mr_series(pixels[:3], description="3-plane localizer")
    ct = mr_series(pixels[:2], description="CT head")
    for extra in (*scout, *ct):
        extra.StudyInstanceUID = study_uid
    for ds in scout:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    for ds in ct:
        ds.Modality = "CT"
    folder = tmp_path / "study"
    files = write(series, folder / "t1") + write(scout, folder / "scout") + write(ct, folder / "ct")
    multi = enhanced_mr(pixels[:4], positions=[30.0, 10.0, 40.0, 20.0])
    multi.StudyInstanceUID = study_uid
    (folder / "enhanced").mkdir()
    multi.save_as(folder / "enhanced" / "MF0001", enforce_file_format=True)
    files.append(folder / "enhanced" / "MF0001")
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "broken.dcm").write_bytes(series[0].file_meta.MediaStorageSOPInstanceUID.encode())
    return {"folder": folder, "files": files, "pixels": pixels, "series": series, "study_uid": study_uid}


def test_grouping_ordering_and_selection(study: dict[str, object]) -> None:
    folder = study["folder"]
    assert isinstance(folder, Path)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    series, problems = read_dicom_series(files)
    assert sorted(Path(p.source).name for p in problems) == ["broken.dcm", "notes.txt"]
    assert all(p.reason for p in problems)
    assert {s.study_uid for s in series} == {study["study_uid"]} and len(series) == 4

    kept, skipped = SeriesRules.from_dict(DEFAULT_RULES).select(series)
    reasons = {s.series.description: s.reason for s in skipped}
    assert set(reasons) == {"3-plane localizer", "CT head"}
    assert "LOCALIZER" in reasons["3-plane localizer"] and "Modality CT" in reasons["CT head"]
    by_name = {s.description: s for s in kept}
    assert set(by_name) == {"T1 AX", "T2 AX enhanced"}

    t1 = by_name["T1 AX"]
    assert t1.ordered_by == "position"
    assert [r.position for r in t1.slices] == [5.0 * k for k in range(1, 7)]  # inferior to superior
    assert [r.instance_number for r in t1.slices] == [100 - 7 * k for k in range(6)]  # gaps kept as they are
    images = list(t1.images())
    original = study["pixels"]
    assert isinstance(original, list)
    for image, expected in zip(images, original, strict=True):  # the pixels follow the geometry, not the files
        assert not isinstance(image, Exception) and same_slice(image.pixels, expected)
    assert not same_slice(original[0], original[1])

    enhanced = by_name["T2 AX enhanced"]
    assert [r.position for r in enhanced.slices] == [10.0, 20.0, 30.0, 40.0]
    assert [r.frame for r in enhanced.slices] == [1, 3, 0, 2]
    frames = list(enhanced.images())
    for image, frame in zip(frames, [1, 3, 0, 2], strict=True):
        assert not isinstance(image, Exception)
        assert image.meta.frame_index == frame and any("window" in n for n in image.meta.notes)
        assert same_slice(image.pixels, original[frame])
    assert any("multi-frame" in n for n in enhanced.notes)


def test_oblique_stack_is_ordered_along_its_normal(shared_data: Path, tmp_path: Path) -> None:
    pixels = real_slices(shared_data, 4, side=64)
    series = mr_series(pixels)
    # A coronal stack: rows along x, columns along z, so the normal is -y; positions step along it.
    for k, ds in enumerate(series):
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [3.0, -4.0 * k, 7.0]
        ds.InstanceNumber = 4 - k
    read, _ = read_dicom_series(write(series, tmp_path / "cor", shuffle=3))
    # The normal is row × column = (0, 1, 0): the slice at y = -12 comes first.
    assert [r.position for r in read[0].slices] == [-12.0, -8.0, -4.0, 0.0]
    assert [r.instance_number for r in read[0].slices] == [1, 2, 3, 4]


def test_falls_back_to_instance_number_then_file_order(shared_data: Path, tmp_path: Path) -> None:
    pixels = real_slices(shared_data, 3, side=64)
    series = mr_series(pixels)
    for k, ds in enumerate(series):
        del ds.ImagePositionPatient
        ds.InstanceNumber = [7, 2, 40][k]
    read, _ = read_dicom_series(write(series, tmp_path / "a", shuffle=1))
    assert read[0].ordered_by == "instance_number"
    assert [r.instance_number for r in read[0].slices] == [2, 7, 40]
    images = [i for i in read[0].images() if not isinstance(i, Exception)]
    assert same_slice(images[0].pixels, pixels[1])

    for ds in series:
        del ds.InstanceNumber
    files = write(series, tmp_path / "b", shuffle=None)
    read, _ = read_dicom_series(files)
    assert read[0].ordered_by == "file order" and [r.source for r in read[0].slices] == [str(f) for f in files]


def test_rules_from_a_file_min_slices_and_bad_rules(study: dict[str, object], tmp_path: Path) -> None:
    folder = study["folder"]
    assert isinstance(folder, Path)
    series, _ = read_dicom_series(sorted(p for p in folder.rglob("IM*")))
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(
        json.dumps(
            {"selections": [{"name": "axial MR", "conditions": {"Modality": "MR", "SeriesDescription": "(?i)ax"},
                             "min_slices": 4}]}
        )
    )  # fmt: skip
    kept, skipped = SeriesRules.load(rules_file).select(series)
    assert [s.description for s in kept] == ["T1 AX"]
    reasons = {s.series.description: s.reason for s in skipped}
    assert "does not match" in reasons["CT head"] and 'rule "axial MR"' in reasons["CT head"]
    assert "does not match (?i)ax" in reasons["3-plane localizer"]

    yaml_file = tmp_path / "rules.yaml"
    yaml_file.write_text("selections:\n  - name: big\n    conditions: {Modality: MR}\n    min_slices: 5\n")
    kept, skipped = SeriesRules.load(yaml_file).select(series)
    assert [s.description for s in kept] == ["T1 AX"]
    assert any("3 slice(s), fewer than 5" in s.reason for s in skipped)

    for bad in ({}, {"selections": [{"conditions": {"Modality": "("}}]}, {"selections": [{"min_slices": 0}]},
                {"selections": [{"colour": "red"}]}, {"selections": [{"conditions": {"Rows": True}}]}):  # fmt: skip
        with pytest.raises(InvalidRequestError):
            SeriesRules.from_dict(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidRequestError, match="not valid json"):
        SeriesRules.load(broken)


def test_series_limits_refuse_before_decoding(study: dict[str, object]) -> None:
    files = study["files"]
    assert isinstance(files, list)
    with pytest.raises(ImageTooLargeError, match="too many files"):
        read_dicom_series(files, limits=SeriesLimits(max_files=3))
    with pytest.raises(ImageTooLargeError, match="too many slices"):
        read_dicom_series(files, limits=SeriesLimits(max_slices=10))
    with pytest.raises(ImageTooLargeError, match="MB of slices"):
        read_dicom_series(files, limits=SeriesLimits(max_total_bytes=100_000))


def test_bytes_sources_and_identity_untouched(shared_data: Path) -> None:
    pixels = real_slices(shared_data, 2, side=64)
    from ..dicom_files import encoded

    series = mr_series(pixels)
    read, problems = read_dicom_series([(f"s{k}.dcm", encoded(ds)) for k, ds in enumerate(series)])
    assert not problems and len(read[0].slices) == 2
    image = next(read[0].images())
    assert not isinstance(image, Exception) and image.meta.dicom["PatientID"] == IDENTITY["PatientID"]


# -- NIfTI ------------------------------------------------------------------------------------------------
def test_nifti_axial_slices_from_the_affine(shared_data: Path, tmp_path: Path) -> None:
    pixels = real_slices(shared_data, 5, side=96)
    ras = np.diag([1.0, 1.0, 2.5, 1.0])
    ras[2, 3] = -10.0
    path = nifti_volume(pixels, ras, tmp_path / "volume.nii.gz")
    assert sniff_volume_or_dicom(path) == "nifti"
    series = read_nifti(path)
    assert series.kind == "nifti" and len(series.slices) == 5
    assert [r.position for r in series.slices] == [-10.0, -7.5, -5.0, -2.5, 0.0]
    images = [i for i in series.images() if not isinstance(i, Exception)]
    # one window for the volume (clipped at its 99.5th percentile): each shown slice is its real one
    for k, (image, original) in enumerate(zip(images, pixels, strict=True)):
        assert same_slice(image.pixels, original, r=0.98)
        assert not same_slice(image.pixels, pixels[(k + 1) % 5], r=0.98)

    # The same anatomy stored flipped in x and in z (LAI): the affine says so, the slices match.
    volume = np.asarray(nib.load(path).dataobj)[::-1, :, ::-1]
    flipped = np.diag([-1.0, 1.0, -2.5, 1.0])
    flipped[0, 3], flipped[2, 3] = 95.0, 0.0
    other = tmp_path / "flipped.nii"
    nib.save(nib.Nifti1Image(volume, flipped), other)
    again = read_nifti(other)
    assert [r.position for r in again.slices] == [-10.0, -7.5, -5.0, -2.5, 0.0]
    assert any("reoriented from LAI" in n for n in again.notes)
    for a, b in zip(again.images(), images, strict=True):
        assert not isinstance(a, Exception)
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_nifti_bad_inputs_and_limits(shared_data: Path, tmp_path: Path) -> None:
    pixels = real_slices(shared_data, 3, side=64)
    path = nifti_volume(pixels, np.eye(4), tmp_path / "v.nii")
    with pytest.raises(ImageTooLargeError, match="too many slices"):
        read_nifti(path, limits=SeriesLimits(max_slices=2))
    raw = path.read_bytes()
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(Exception, match="truncated NIfTI"):
        read_nifti(truncated)
    four_d = tmp_path / "4d.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 2), np.int16), np.eye(4)), four_d)
    with pytest.raises(UnsupportedImageError, match="one 3-D volume"):
        read_nifti(four_d)
    with pytest.raises(UnsupportedImageError):
        read_nifti(pydicom.data.get_testdata_file("MR_small.dcm"))
