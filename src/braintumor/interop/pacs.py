"""A PACS client over DICOMweb: find studies (QIDO-RS), fetch their instances (WADO-RS), store results (STOW-RS).

Why DICOMweb and `dicomweb-client <https://dicomweb-client.readthedocs.io>`_: it is plain HTTP(S) with the PACS's
own authentication, which every current PACS speaks (Orthanc with its DICOMweb plugin, dcm4chee, Google/Azure
health APIs), where DIMSE needs AE titles and open ports configured on both sides. This module only moves DICOM:
scoring a study is the caller's (``inference``), writing SR + SC is :mod:`braintumor.interop.dicom_out`.

Credentials are given separately (HTTP basic auth or a bearer token), never inside the URL, and no error message
carries them. Every failure — unreachable server, refused credentials, unknown study, rejected instances — raises
:class:`PacsError` with a one-line reason.

Example:
    >>> pacs = PacsClient("http://127.0.0.1:8042/dicom-web", username="braintumor", password="…")  # doctest: +SKIP
    >>> [s.study_uid for s in pacs.search_studies(patient_id="MRN-0042")]  # doctest: +SKIP
    ['1.2.826.0.1.3680043.8.498.1…']
    >>> datasets = pacs.retrieve_study("1.2.826.0.1.3680043.8.498.1…")  # doctest: +SKIP
    >>> pacs.store([sr, *captures]).stored  # doctest: +SKIP
    ('2.25.1…', '2.25.2…')
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from braintumor.errors import BrainTumorError
from braintumor.imaging.dicom_tags import StudySummary, int_value

#: What a DICOM UID may be (PS3.5 9.1): digits and dots, at most 64 characters. Checked before a UID from the PACS
#: names a file.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_STUDY_FIELDS = (
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
T = TypeVar("T")


class PacsError(BrainTumorError):
    """The PACS could not be reached, refused the request, or rejected what was sent. ``status`` is the PACS's HTTP
    status when it answered with an error (401, 404 …), ``None`` otherwise (unreachable, or refused here)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InstanceSummary:
    """One instance as a QIDO-RS instance search returns it."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str


@dataclass(frozen=True)
class StoreResult:
    """What a STOW-RS store accepted (SOP Instance UIDs) and refused (UID, the PACS's failure reason code)."""

    stored: tuple[str, ...]
    failed: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class RetrievedStudy:
    """A retrieved study's image instances as the bytes of DICOM files (``instance-0001.dcm`` …, in the PACS's
    order: names that carry nothing of the instance), how many instances had no pixels (an SR, a presentation
    state …) and those that could not be encoded (reason)."""

    files: tuple[tuple[str, bytes], ...]
    passed_over: int
    unreadable: tuple[str, ...]


def encoded_instances(datasets: Iterable[Any]) -> RetrievedStudy:
    """``datasets`` (as :meth:`PacsClient.retrieve_study` returns them) as DICOM files to score: what comes from a
    PACS is then decoded again by the imaging readers, with their structure checks, like any upload."""
    files: list[tuple[str, bytes]] = []
    passed_over = 0
    unreadable: list[str] = []
    for ds in datasets:
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            passed_over += 1
            continue
        buf = io.BytesIO()
        try:
            ds.save_as(buf, enforce_file_format=True)
        except (AttributeError, ValueError, TypeError) as exc:
            unreadable.append(f"an instance cannot be encoded as a DICOM file ({type(exc).__name__})")
            continue
        files.append((f"instance-{len(files) + 1:04d}.dcm", buf.getvalue()))
    return RetrievedStudy(tuple(files), passed_over, tuple(unreadable))


class PacsClient:
    """A DICOMweb endpoint (``url``: the service root, e.g. Orthanc's ``http://host:8042/dicom-web``).

    ``username``/``password`` use HTTP basic auth, ``token`` a bearer token; ``timeout`` bounds each request (s);
    ``verify`` is requests' TLS verification (True, or a CA bundle path). A request that fails (unreachable, 429,
    503 …) is tried ``retries`` more times, 1 s then 2 s … apart (dicomweb-client's own default waits 30 s in all
    before an unreachable server is reported).
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
        retries: int = 2,
    ) -> None:
        from dicomweb_client import DICOMwebClient

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"PACS URL must be http(s)://host[:port]/path, got {_safe(url)!r}")
        if parts.username or parts.password:
            raise PacsError("put PACS credentials in username/password or token, not in the URL")
        if token is not None and (username is not None or password is not None):
            raise PacsError("give a PACS username/password or a token, not both")
        session = _wildcard_session()
        session.verify = verify
        if username is not None:
            session.auth = (username, password or "")
        if token is not None:
            session.headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._client = DICOMwebClient(self.url, session=session, timeout=timeout)
        self._client.set_http_retry_params(retry=retries > 0, max_attempts=retries + 1, wait_exponential_multiplier=500)

    # -- QIDO-RS ---------------------------------------------------------------------------------------------
    def search_studies(
        self,
        *,
        patient_id: str | None = None,
        patient_name: str | None = None,
        study_uid: str | None = None,
        accession_number: str | None = None,
        study_date: str | None = None,
        modality: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[StudySummary]:
        """Studies matching every filter given (DICOM matching: ``*`` wildcards in names, ``YYYYMMDD-YYYYMMDD``
        date ranges); at most ``limit``, after skipping the first ``offset`` (the PACS's order)."""
        filters = {
            "PatientID": patient_id,
            "PatientName": patient_name,
            "StudyInstanceUID": study_uid,
            "AccessionNumber": accession_number,
            "StudyDate": study_date,
            "ModalitiesInStudy": modality,
        }
        found = self._call(
            "search studies",
            lambda: self._client.search_for_studies(
                search_filters={k: v for k, v in filters.items() if v is not None},
                fields=list(_STUDY_FIELDS),
                limit=limit,
                offset=offset or None,
            ),
        )
        return [_study(_dataset(item)) for item in found]

    def search_instances(self, study_uid: str, *, series_uid: str | None = None) -> list[InstanceSummary]:
        """The instances of a study (or of one of its series)."""
        _check_uid(study_uid)
        found = self._call(
            f"search the instances of study {study_uid}",
            lambda: self._client.search_for_instances(
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                fields=["Modality"],
                get_remaining=True,
            ),
        )
        out = []
        for item in found:
            ds = _dataset(item)
            out.append(InstanceSummary(study_uid=str(ds.get("StudyInstanceUID", study_uid)),
                                       series_uid=str(ds.get("SeriesInstanceUID", "")),
                                       sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                                       sop_class_uid=str(ds.get("SOPClassUID", "")),
                                       modality=str(ds.get("Modality", ""))))  # fmt: skip
        return out

    # -- WADO-RS ---------------------------------------------------------------------------------------------
    def retrieve_study(self, study_uid: str) -> list[Any]:
        """Every instance of a study, as pydicom Datasets (in memory: see :meth:`pull_study` for large studies)."""
        _check_uid(study_uid)
        datasets: list[Any] = self._call(f"retrieve study {study_uid}", lambda: self._client.retrieve_study(study_uid))
        if not datasets:
            raise PacsError(f"study {study_uid} has no instances on the PACS")
        return datasets

    def pull_study(self, study_uid: str, folder: str | Path) -> list[Path]:
        """Retrieve a study into ``folder`` one instance at a time, as ``<SOP Instance UID>.dcm``."""
        _check_uid(study_uid)
        out_dir = Path(folder)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = self._call(f"retrieve study {study_uid}",
                             lambda: _write_all(self._client.iter_study(study_uid), out_dir))  # fmt: skip
        if not written:
            raise PacsError(f"study {study_uid} has no instances on the PACS")
        return written

    # -- STOW-RS ---------------------------------------------------------------------------------------------
    def store(self, datasets: Sequence[Any]) -> StoreResult:
        """Store ``datasets`` (pydicom Datasets or highdicom objects, with file meta). Raises :class:`PacsError`
        when the PACS accepted none of them; partial failures are in :attr:`StoreResult.failed`."""
        if not datasets:
            return StoreResult((), ())
        files = [_part10(ds) for ds in datasets]
        response = self._call("store instances", lambda: self._client.store_instances(files))
        stored = tuple(str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", []))
        failed = tuple((str(item.get("ReferencedSOPInstanceUID", "")), int(item.get("FailureReason", 0) or 0))
                       for item in response.get("FailedSOPSequence", []))  # fmt: skip
        if not stored:
            raise PacsError(f"the PACS stored none of the {len(datasets)} instances sent (failures: {list(failed)})")
        return StoreResult(stored, failed)

    # -- errors ----------------------------------------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], T]) -> T:
        import requests
        from pydicom.errors import InvalidDicomError

        try:
            return call()
        except InvalidDicomError:
            raise PacsError(f"cannot {what}: the PACS sent an instance that is not a DICOM Part 10 file") from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            reason = {401: "refused the credentials", 403: "refused access", 404: "does not know it"}.get(
                status or 0, "answered with an error"
            )
            raise PacsError(f"cannot {what}: the PACS at {_safe(self.url)} {reason} (HTTP {status})",
                            status=status) from None  # fmt: skip
        except requests.RequestException as exc:
            raise PacsError(
                f"cannot {what}: the PACS at {_safe(self.url)} is unreachable ({type(exc).__name__})"
            ) from None


def _wildcard_session() -> Any:
    """A requests Session that sends the DICOM wildcards ``*`` and ``?`` of a query string unescaped.

    Both are legal as they are in a URL query (RFC 3986 3.4) and mean the same there, but Orthanc's DICOMweb plugin
    (1.x) matches a QIDO-RS value without percent-decoding it, so ``PatientName=Doe%2A`` (how requests sends
    ``Doe*``) matches nothing on it. Everything else stays escaped (a space, ``^``: such values match nothing on
    that plugin, found by the tests).
    """
    import requests

    class WildcardSession(requests.Session):
        def send(self, request: Any, **kwargs: Any) -> Any:
            url = str(request.url or "")
            if "?" in url:
                base, _, query = url.partition("?")
                request.url = f"{base}?{query.replace('%2A', '*').replace('%3F', '?')}"
            return super().send(request, **kwargs)

    return WildcardSession()


def _part10(ds: Any) -> Any:
    """``ds`` as read back from a DICOM Part 10 file (preamble, DICM, complete file meta). dicomweb-client encodes
    what it is given as is: a dataset built in memory has no preamble, the PACS keeps the file verbatim and
    dicomweb-client (which reads without ``force``) then cannot read it back."""
    import pydicom

    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (AttributeError, ValueError) as exc:
        raise PacsError(f"cannot store an instance that is not a complete DICOM file: {exc}") from None
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _write_all(datasets: Iterable[Any], folder: Path) -> list[Path]:
    paths = []
    for ds in datasets:
        uid = str(ds.get("SOPInstanceUID", ""))
        _check_uid(uid)
        path = folder / f"{uid}.dcm"
        ds.save_as(path, enforce_file_format="TransferSyntaxUID" in getattr(ds, "file_meta", {}))
        paths.append(path)
    return paths


def _check_uid(uid: str) -> None:
    if len(uid) > 64 or not _UID.match(uid):
        raise PacsError(f"not a DICOM UID: {uid[:80]!r}")


def _dataset(item: dict[str, Any]) -> Any:
    from pydicom.dataset import Dataset

    return Dataset.from_json(item)


def _study(ds: Any) -> StudySummary:
    modalities = ds.get("ModalitiesInStudy")
    if modalities is None or modalities == "":
        modality_list: tuple[str, ...] = ()
    elif isinstance(modalities, str):
        modality_list = (modalities,)
    else:
        modality_list = tuple(str(m) for m in modalities)
    return StudySummary(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        accession_number=str(ds.get("AccessionNumber", "") or ""),
        description=str(ds.get("StudyDescription", "") or ""),
        modalities=modality_list,
        series=int_value(ds.get("NumberOfStudyRelatedSeries")),
        instances=int_value(ds.get("NumberOfStudyRelatedInstances")),
    )


def _safe(url: str) -> str:
    """``url`` without user information (for messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
