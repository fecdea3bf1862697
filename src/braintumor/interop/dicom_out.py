"""Write a prediction as DICOM of the source's study: a Comprehensive SR and Secondary Captures of the heatmap.

Why: a result that lives only in our web app is invisible to the radiologist's viewer; returned as DICOM into the
PACS (as MONAI Deploy's SR writer and IHE AI Results do), it sits beside the images it was computed from. Both
objects are built by `highdicom <https://highdicom.readthedocs.io>`_, not by hand, and pass ``dciodvfy``.

* The **SR** is a TID 1500 Imaging Measurement Report: one measurement group with the answer — the outcome
  (tumor / refer for review / no tumor) as a qualitative evaluation, p(tumor) as a measurement, the tumor type and
  its probability when the model names one (finding type Neoplasm, finding site Brain) — whose source image is the
  most suspicious slice (highest p(tumor)); for a series, one more group per slice with its own outcome and
  p(tumor). Every analysed instance is in the image library and the evidence. The model is the observer device,
  its algorithm identification and the Contributing Equipment (name, version). VerificationFlag is UNVERIFIED,
  PreliminaryFlag PRELIMINARY and the series description says "not for diagnostic use".
* The **Secondary Captures** are the Grad-CAM overlay of each analysed slice (at its decoded size), one instance per
  slice in one new series of the source's study, each referencing its source image (and, for a multi-frame source,
  the frame the reader analysed: the middle one). highdicom writes single-frame SC only, so a series gives a
  series of captures rather than one multi-frame SC.

De-identification: patient and study attributes are copied from the source datasets given, and from nothing else,
so writing from the de-identified file (what storage keeps by default) reintroduces nothing it stripped; the
de-identification record (PatientIdentityRemoved, DeidentificationMethod …) is carried over. A Type 2 patient or
study attribute the source lacks is written empty. New UIDs are random ``2.25.`` UIDs; the model's device UID is
derived from its name and version.

The answer written is a :class:`SliceAnswer`: a fresh ``Prediction``, or a :class:`StoredAnswer` rebuilt from what
an earlier run kept (``Prediction.as_dict()`` and the heatmap), so a scan stored by the API is written later from
its stored answer without running the model again.

Concepts DICOM has no code for (our outcomes, p(tumor), the model's tumor types) use the private coding scheme
:data:`CODING_SCHEME` ("99" prefix: a private scheme, PS3.3 8.2), declared in the SR's Coding Scheme
Identification Sequence.

Example:
    >>> from braintumor.inference.predictor import Predictor  # doctest: +SKIP
    >>> data = open("scan.dcm", "rb").read()  # doctest: +SKIP
    >>> image = load_image(data)  # doctest: +SKIP
    >>> analysed = AnalysedSlice.from_bytes(data, image, Predictor.load("model").predict(image))  # doctest: +SKIP
    >>> written = write_dicom_results([analysed], "out/")  # doctest: +SKIP
    >>> written.sr.name, len(written.captures)  # doctest: +SKIP
    ('SR_2.25.1234….dcm', 1)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import __version__
from braintumor.imaging.overlay import overlay
from braintumor.imaging.types import LoadedImage
from braintumor.interop.answers import Finding, SliceAnswer
from braintumor.models.decision import Outcome

#: The private coding scheme of our own concepts (outcomes, p(tumor), tumor types).
CODING_SCHEME = "99BRAINTUMOR"
MANUFACTURER = "braintumor"
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
SR_SERIES_DESCRIPTION = f"AI tumor result - {NOT_FOR_DIAGNOSIS}"
SC_SERIES_DESCRIPTION = f"AI heatmap (Grad-CAM) - {NOT_FOR_DIAGNOSIS}"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902

#: The one place the three-way outcome becomes a code (value, meaning).
OUTCOME_CODES: dict[Outcome, tuple[str, str]] = {
    "tumor": ("TUMOR", "Tumor"),
    "refer": ("REFER", "Refer for review"),
    "no_tumor": ("NO_TUMOR", "No tumor"),
}
_OUTCOME = ("OUTCOME", "Decision support outcome")
_P_TUMOR = ("P_TUMOR", "Probability of tumor")
_TUMOR_TYPE = ("TUMOR_TYPE", "Tumor type")

# Carried from a de-identified source onto what we write (the record of what was done).
_DEID_RECORD = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)
# Type 2 attributes highdicom reads from the source (patient and study): written empty when the source lacks them.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class AnalysedSlice:
    """One analysed DICOM image: its header (``source``, a pydicom Dataset, pixel data not needed), the decoded
    pixels the model saw and the model's answer. Give the de-identified file when the site de-identifies."""

    source: Any
    image: LoadedImage
    prediction: SliceAnswer

    @classmethod
    def from_bytes(cls, data: bytes, image: LoadedImage, prediction: SliceAnswer) -> AnalysedSlice:
        """Read the header of the DICOM file ``data`` whose decoding is ``image`` (decode first: the readers of
        :mod:`braintumor.imaging` check a file's structure before pydicom parses it)."""
        import pydicom

        return cls(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True), image, prediction)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.source.SOPInstanceUID)

    @property
    def frame_number(self) -> int | None:
        """The frame analysed (1-based, as DICOM counts) of a multi-frame source, else None. A file of a single-frame
        IOD that carries several frames anyway (not conformant; the reader takes the middle one) cannot be referenced
        by frame: it is referenced as a whole."""
        # highdicom's IOD tables decide (the helper is not in its __all__; highdicom is pinned and this is tested)
        from highdicom._standard_utils import is_multiframe_image

        frames = int(self.source.get("NumberOfFrames", 1) or 1)
        return self.image.meta.frame_index + 1 if frames > 1 and is_multiframe_image(self.source) else None


@dataclass(frozen=True)
class DicomResults:
    """The files :func:`write_dicom_results` wrote."""

    sr: Path
    captures: tuple[Path, ...]


def most_suspicious(slices: Sequence[AnalysedSlice]) -> AnalysedSlice:
    """The slice with the highest p(tumor) (the first of equals)."""
    if not slices:
        raise ValueError("no analysed slices")
    return max(slices, key=lambda s: s.prediction.p_tumor)


def structured_report(slices: Sequence[AnalysedSlice], *, finding: Finding | None = None) -> Any:
    """A Comprehensive SR (highdicom ``ComprehensiveSR``) of ``slices`` (one image, or the instances of a series).

    ``finding`` is the answer for the whole series; by default the most suspicious slice's (a study scorer passes
    its own). Raises ValueError when the slices are not of one study or not scored by one model.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check_same(slices)
    top = most_suspicious(slices)
    answer = finding or Finding.of(top.prediction)
    model, version = top.prediction.model_name, top.prediction.model_version
    algorithm = hd.sr.AlgorithmIdentification(name=model, version=version, manufacturer=MANUFACTURER)
    sources = [_with_type2(s.source) for s in slices]

    top_source = next(src for s, src in zip(slices, sources, strict=True) if s is top)
    groups = [_group(answer, top_source, top.frame_number, algorithm, "Result", hd, codes)]
    if len(slices) > 1:
        for analysed, source in zip(slices, sources, strict=True):
            number = analysed.source.get("InstanceNumber")
            label = f"Slice {number}" if number is not None else f"Slice {analysed.sop_instance_uid}"
            alone = Finding(analysed.prediction.outcome, analysed.prediction.p_tumor)
            groups.append(_group(alone, source, analysed.frame_number, algorithm, label, hd, codes))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=model_device_uid(model, version),
            name=model,
            manufacturer_name=MANUFACTURER,
            model_name=f"{model} {version}"[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        referenced_images=sources,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=sources,
        content=report,
        series_instance_uid=new_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[_equipment(model, version, hd, codes)],
        series_description=SR_SERIES_DESCRIPTION,
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=CODING_SCHEME, name="braintumor concepts", responsible_organization=MANUFACTURER
            )
        ],
    )
    _carry_deid(sr, top.source)
    return sr


def heatmap_captures(slices: Sequence[AnalysedSlice], *, alpha: float = 0.4) -> list[Any]:
    """One Secondary Capture (highdicom ``SCImage``, RGB) of the Grad-CAM overlay per slice, in one new series.

    Each is drawn at the slice's decoded size by :func:`braintumor.imaging.overlay.overlay` (what the app shows)
    and references its source image. Raises ValueError when a prediction was made without its map.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian

    _check_same(slices)
    series_uid = new_uid()
    out = []
    for number, analysed in enumerate(slices, start=1):
        cam = analysed.prediction.cam
        if cam is None:
            raise ValueError("the prediction has no heatmap: predict with cam=True to write a Secondary Capture")
        pixels = overlay(analysed.image.pixels, cam, alpha=alpha)
        source = _with_type2(analysed.source)
        orientation = _patient_orientation(source)
        spacing = source.get("PixelSpacing")
        same_size = pixels.shape[:2] == (int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0))
        prediction = analysed.prediction
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=new_uid(),
            instance_number=number,
            manufacturer=MANUFACTURER,
            # highdicom annotates the spacing as ints; it writes DS (decimal) values
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing and same_size else None,  # type: ignore[arg-type]
            patient_orientation=orientation or ("L", "P"),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            contributing_equipment=[_equipment(prediction.model_name, prediction.model_version, hd, codes)],
            series_description=SC_SERIES_DESCRIPTION,
        )
        if orientation is None:  # unknown: Type 2, left empty rather than invented
            sc["PatientOrientation"].value = None
        _body_part(sc, source)
        sc.BurnedInAnnotation = "NO"
        sc.DerivationDescription = (
            f"Grad-CAM overlay by {prediction.model_name} {prediction.model_version}: outcome "
            f"{OUTCOME_CODES[prediction.outcome][1].lower()}, p(tumor) {prediction.p_tumor:.3f}. {NOT_FOR_DIAGNOSIS}."
        )
        reference = Dataset()
        reference.ReferencedSOPClassUID = analysed.source.SOPClassUID
        reference.ReferencedSOPInstanceUID = analysed.source.SOPInstanceUID
        reference.PurposeOfReferenceCodeSequence = [hd.sr.CodedConcept.from_code(
            codes.DCM.SourceImageForImageProcessingOperation)]  # fmt: skip
        if analysed.frame_number is not None:
            reference.ReferencedFrameNumber = analysed.frame_number
        sc.SourceImageSequence = [reference]
        _carry_deid(sc, analysed.source)
        out.append(sc)
    return out


def write_dicom_results(slices: Sequence[AnalysedSlice], out_dir: str | Path, *, finding: Finding | None = None,
                        alpha: float = 0.4) -> DicomResults:  # fmt: skip
    """Write the SR and the Secondary Captures of ``slices`` into ``out_dir`` as ``SR_<uid>.dcm`` and
    ``SC_<uid>.dcm`` (SOP Instance UIDs: names never collide)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sr = structured_report(slices, finding=finding)
    sr_path = folder / f"SR_{sr.SOPInstanceUID}.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    paths = []
    for sc in heatmap_captures(slices, alpha=alpha):
        path = folder / f"SC_{sc.SOPInstanceUID}.dcm"
        sc.save_as(path, enforce_file_format=True)
        paths.append(path)
    return DicomResults(sr_path, tuple(paths))


def new_uid() -> str:
    """A new random ``2.25.`` UID (PS3.5 B.2): no organisation root to register, and nothing derived from the input."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=None))


def model_device_uid(name: str, version: str) -> str:
    """A UID for the model as an observer device, the same for the same name and version: a ``2.25.`` UID of a
    name-based (version 5) UUID, as PS3.5 B.2 allows."""
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'braintumor-model:{name}:{version}').int}"


def code(value: str, meaning: str) -> Any:
    """A concept of our private coding scheme (value at most 16 characters, meaning at most 64)."""
    import highdicom as hd

    return hd.sr.CodedConcept(value=value[:16], scheme_designator=CODING_SCHEME, meaning=meaning[:64])


def tumor_type_code(label: str) -> Any:
    """The concept of one of the model's tumor classes (``glioma`` -> GLIOMA "glioma")."""
    return code(label.upper().replace(" ", "_"), label)


# -- helpers ---------------------------------------------------------------------------------------------------
def _group(answer: Finding, source: Any, frame: int | None, algorithm: Any, label: str, hd: Any, codes: Any) -> Any:
    unit = codes.UCUM.NoUnits
    measurements = [hd.sr.Measurement(name=code(*_P_TUMOR), value=answer.p_tumor, unit=unit, algorithm_id=algorithm)]
    evaluations = [hd.sr.QualitativeEvaluation(name=code(*_OUTCOME), value=code(*OUTCOME_CODES[answer.outcome]))]
    if answer.tumor_type is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(name=code(*_TUMOR_TYPE), value=tumor_type_code(answer.tumor_type))
        )
        if answer.type_probability is not None:
            name = code(f"P_{answer.tumor_type.upper()}", f"Probability of {answer.tumor_type}")
            measurements.append(hd.sr.Measurement(name=name, value=answer.type_probability, unit=unit,
                                                  algorithm_id=algorithm))  # fmt: skip
    frames = None if frame is None else [frame]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier=label),
        finding_type=codes.SCT.Neoplasm,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Brain)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source, referenced_frame_numbers=frames)],
    )


def _equipment(model: str, version: str, hd: Any, codes: Any) -> Any:
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=model[:64],
        software_versions=[version[:64], f"braintumor {__version__}"],
        contribution_description=f"AI decision support, {NOT_FOR_DIAGNOSIS.lower()}",
    )


def _check_same(slices: Sequence[AnalysedSlice]) -> None:
    if not slices:
        raise ValueError("no analysed slices")
    studies = {str(s.source.get("StudyInstanceUID", "")) for s in slices}
    if len(studies) != 1 or "" in studies:
        raise ValueError("the analysed slices must belong to one study (with a StudyInstanceUID)")
    models = {(s.prediction.model_name, s.prediction.model_version) for s in slices}
    if len(models) != 1:
        raise ValueError(f"the analysed slices were scored by different models: {sorted(models)}")


def _with_type2(source: Any) -> Any:
    """The source itself, or a copy with the Type 2 patient/study attributes it lacks set empty."""
    missing = [k for k in _TYPE2 if k not in source]
    if not missing:
        return source
    copy = source.copy()
    for keyword in missing:
        setattr(copy, keyword, None)
    return copy


def _body_part(target: Any, source: Any) -> None:
    """The source's body part and laterality (General Series). Laterality is Type 2C: absent for an unpaired body
    part, so it is left out when the source names the part, and empty (unknown, never invented) when it does not."""
    if source.get("BodyPartExamined"):
        target.BodyPartExamined = source.BodyPartExamined
    if source.get("Laterality"):
        target.Laterality = source.Laterality
    elif not source.get("BodyPartExamined"):
        target.Laterality = None


def _carry_deid(target: Any, source: Any) -> None:
    for keyword in _DEID_RECORD:
        if keyword in source:
            setattr(target, keyword, source[keyword].value)


def _patient_orientation(source: Any) -> tuple[str, str] | None:
    """Row and column directions (dominant patient axis, LPS) from ImageOrientationPatient, or None."""
    cosines = source.get("ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    letters = (("R", "L"), ("A", "P"), ("F", "H"))  # negative, positive direction along x, y, z
    out = []
    for vector in (np.asarray(cosines[:3], float), np.asarray(cosines[3:], float)):
        axis = int(np.argmax(np.abs(vector)))
        out.append(letters[axis][int(vector[axis] > 0)])
    return out[0], out[1]
