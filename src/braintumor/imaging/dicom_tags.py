"""The DICOM tags a decoded image keeps in its metadata, which of them identify a patient, how an integer
attribute's value is read, and the summary of one study a PACS search gives.

Why a module of its own (and nothing imported beyond the standard library): the reader copies these tags, and the
storage layer, which imports no numpy, decides from the same lists what a de-identified record may keep; the
series reader (Instance Number) and the PACS client (a study's series and instance counts) read integer values by
the one rule of :func:`int_value`; the PACS client builds :class:`StudySummary` from a QIDO-RS answer and the UI
reads the same record back from ``GET /pacs/studies`` (the UI may import the imaging core, not the client).

Example:
    >>> "PatientName" in IDENTIFYING_TAGS, "Modality" in DESCRIPTIVE_TAGS
    (True, True)
    >>> int_value("12"), int_value(""), int_value("n/a")
    (12, None, None)
"""

from dataclasses import dataclass
from typing import Any

#: Tags copied into :attr:`ImageMeta.dicom` (all as strings) when present.
DESCRIPTIVE_TAGS = (
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "Manufacturer",
    "MagneticFieldStrength",
    "SliceThickness",
    "PixelSpacing",
    "PhotometricInterpretation",
    "SOPClassUID",
)
#: Identifying tags, also copied (a report may show them) but flagged so the storage layer de-identifies
#: them by default (PS3.15 basic profile).
IDENTIFYING_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "InstitutionName",
    "ReferringPhysicianName",
)
#: Descriptive tags holding free text, which may name a patient: not kept in a de-identified record.
FREE_TEXT_TAGS = ("StudyDescription", "SeriesDescription", "ProtocolName")


def int_value(value: Any) -> int | None:
    """An integer attribute's value (an IS or US element, or its text) as an int; None when it is absent, empty or
    not a number."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StudySummary:
    """One study as a QIDO-RS search returns it (empty strings where the PACS has no value)."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    description: str
    modalities: tuple[str, ...]
    series: int | None
    instances: int | None
