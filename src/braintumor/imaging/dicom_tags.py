"""The DICOM tags a decoded image keeps in its metadata, and which of them identify a patient.

Why a module of its own (and no imports): the reader copies these tags, and the storage layer, which imports no
numpy, decides from the same lists what a de-identified record may keep.

Example:
    >>> "PatientName" in IDENTIFYING_TAGS, "Modality" in DESCRIPTIVE_TAGS
    (True, True)
"""

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
