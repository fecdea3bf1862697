"""The DICOM tags a decoded image keeps in its metadata, which of them identify a patient, and how an integer
attribute's value is read.

Why a module of its own (and nothing imported beyond the standard library): the reader copies these tags, and the
storage layer, which imports no numpy, decides from the same lists what a de-identified record may keep; the
series reader (Instance Number) and the PACS client (a study's series and instance counts) read integer values by
the one rule of :func:`int_value`.

Example:
    >>> "PatientName" in IDENTIFYING_TAGS, "Modality" in DESCRIPTIVE_TAGS
    (True, True)
    >>> int_value("12"), int_value(""), int_value("n/a")
    (12, None, None)
"""

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
