"""DICOM de-identification (PS3.15 Annex E, Basic Application Level Confidentiality Profile).

Why here: uploads are stored de-identified by default, so the history, the GridFS/blob store and every backup
hold no patient names, ids, dates or institutions unless a site explicitly keeps them
(``BRAINTUMOR_KEEP_DICOM_IDENTIFIERS=true``, where its governance allows).

What it does, recursively through sequences:

* removes (X) or empties (Z) the profile's identifying attributes (names, ids, birth date, sex, age,
  addresses, physicians, institution, station, device serial, accession number, study id, comments …);
* empties every date, time and person name that remains (a safety net for attributes not listed);
* replaces instance UIDs (study, series, SOP instance, frame of reference …) by ``2.25.`` UIDs derived from the
  original with a secret salt, so slices of one study still group together but cannot be traced back;
* removes private tags, curves and overlays (which may carry burned-in text);
* records the method: PatientIdentityRemoved = YES, DeidentificationMethod(+CodeSequence, DCM 113100).

Pixel data is kept byte for byte. Burned-in text in the pixels themselves cannot be removed here: the result
says so (``burned_in_annotation``) when the file declares it.

Example:
    >>> from pydicom.data import get_testdata_file
    >>> raw = open(get_testdata_file("MR_small.dcm"), "rb").read()
    >>> clean = deidentify(raw, salt=b"site secret")
    >>> import pydicom, io
    >>> ds = pydicom.dcmread(io.BytesIO(clean.data))
    >>> str(ds.PatientName), ds.PatientIdentityRemoved
    ('', 'YES')
"""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from braintumor.errors import CorruptImageError

PROFILE = "PS3.15 Basic Application Level Confidentiality Profile"  # LO: at most 64 characters

#: Attributes emptied (Z: type 2, must stay present) — the rest of the identifying set is removed (X).
_EMPTY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "ContentCreatorName",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
)
_REMOVE = (
    "PatientAge",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientWeight",
    "PatientSize",
    "PatientComments",
    "PatientState",
    "PatientReligiousPreference",
    "PatientSexNeutered",
    "PatientInsurancePlanCodeSequence",
    "PatientInstitutionResidence",
    "OtherPatientIDs",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "IssuerOfPatientID",
    "ReferencedPatientSequence",
    "ReferencedPatientPhotoSequence",
    "MilitaryRank",
    "BranchOfService",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "MedicalRecordLocator",
    "MedicalAlerts",
    "Allergies",
    "CountryOfResidence",
    "RegionOfResidence",
    "SmokingStatus",
    "PregnancyStatus",
    "LastMenstrualDate",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionCodeSequence",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "OperatorsName",
    "OperatorIdentificationSequence",
    "RequestingPhysician",
    "RequestingService",
    "ScheduledPerformingPhysicianName",
    "StationName",
    "DeviceSerialNumber",
    "PlateID",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "AdmissionID",
    "ReasonForStudy",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestAttributesSequence",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime",
    "CurrentPatientLocation",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "StudyComments",
    "DerivationDescription",
    "TextString",
    "TextComments",
    "AcquisitionComments",
    "InterpretationText",
    "InterpretationAuthor",
    "IdentifyingComments",
    "TimezoneOffsetFromUTC",
    "AcquisitionDateTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
    "DataSetTrailingPadding",
)
#: UID attributes replaced consistently (the ``...ClassUID`` and transfer-syntax UIDs are not identifying).
_UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "ReferencedSOPInstanceUID",
    "FrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID",
    "ReferencedFrameOfReferenceUID",
    "RelatedFrameOfReferenceUID",
    "InstanceCreatorUID",
    "StorageMediaFileSetUID",
    "IrradiationEventUID",
    "ConcatenationUID",
    "DimensionOrganizationUID",
    "UID",
    "DeviceUID",
    "TargetUID",
)
_SAFETY_NET_VRS = ("PN", "DA", "DT", "TM")
#: Tag keywords kept in the stored metadata of a de-identified scan (what :func:`deidentified_tags` lets through).
SAFE_TAGS = frozenset(
    {
        "Modality",
        "BodyPartExamined",
        "Manufacturer",
        "MagneticFieldStrength",
        "SliceThickness",
        "PixelSpacing",
        "PhotometricInterpretation",
        "SOPClassUID",
    }
)


@dataclass(frozen=True)
class Deidentified:
    """The cleaned file and what a report should know about the cleaning."""

    data: bytes
    removed: int
    burned_in_annotation: bool


def deidentify(data: bytes, *, salt: bytes) -> Deidentified:
    """Return a de-identified copy of a DICOM file (see the module docstring).

    ``salt`` keys the UID mapping (the same salt maps the same UID to the same replacement). Raises
    :class:`~braintumor.errors.CorruptImageError` when the file cannot be parsed or written back: an upload that
    cannot be cleaned must not be stored.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types on damaged input
        raise CorruptImageError("cannot read this DICOM file to de-identify it") from exc
    counter = [0]

    def new_uid(old: str) -> str:
        digest = hmac.new(salt, old.encode(), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    def clean(dataset: Any) -> None:
        for elem in list(dataset):
            keyword = elem.keyword
            if keyword in _REMOVE or (elem.tag.group & 0xFF00) in (0x5000, 0x6000):
                del dataset[elem.tag]
                counter[0] += 1
            elif keyword in _UIDS and elem.value:
                if isinstance(elem.value, list | tuple) or elem.VM > 1:
                    elem.value = [new_uid(str(v)) for v in elem.value]
                else:
                    elem.value = new_uid(str(elem.value))
                counter[0] += 1
            elif keyword in _EMPTY or elem.VR in _SAFETY_NET_VRS:
                if elem.value not in (None, "", b""):
                    elem.value = ""
                    counter[0] += 1
            elif elem.VR == "SQ":
                for item in elem.value or []:
                    clean(item)

    try:
        burned = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
        ds.remove_private_tags()
        clean(ds)
        if not hasattr(ds, "file_meta") or ds.file_meta is None:
            ds.file_meta = FileMetaDataset()
        clean(ds.file_meta)
        if "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "REMOVED"
        ds.DeidentificationMethod = PROFILE
        code = Dataset()
        code.CodeValue = "113100"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = DicomSequence([code])
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = ds.original_encoding
            from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian
                if implicit or implicit is None
                else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            )
        buf = io.BytesIO()
        complete = "MediaStorageSOPClassUID" in ds.file_meta and "MediaStorageSOPInstanceUID" in ds.file_meta
        ds.save_as(buf, enforce_file_format=complete)
    except Exception as exc:  # writing back can fail on malformed values
        raise CorruptImageError("cannot de-identify this DICOM file; it was not stored") from exc
    return Deidentified(buf.getvalue(), counter[0], burned)


def deidentified_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Keep only the tags that survive de-identification (for the stored record and the default report)."""
    return {k: v for k, v in tags.items() if k in SAFE_TAGS}
