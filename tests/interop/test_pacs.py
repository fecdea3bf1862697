"""The DICOMweb PACS client against a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``).

Orthanc is started for the module in a network namespace of its own (``unshare -n``: it binds every interface, and
there only loopback exists), with a temporary storage folder, a generated config and a password; the tests reach it
through a relay on 127.0.0.1 (see ``netns.py``). A synthetic study of real slices is stored, searched and retrieved;
its SR and heatmap captures are written by ``interop.dicom_out``, pushed back, and read back from Orthanc.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, MRImageStorage, SecondaryCaptureImageStorage

from braintumor.inference.predictor import Predictor
from braintumor.interop.dicom_out import write_dicom_results
from braintumor.interop.pacs import PacsClient, PacsError

from ..dicom_files import IDENTITY, encoded, mr_series
from ..servers import free_port
from .conftest import USER, Orthanc, analyse, evidence_uids, served_sr
from .netns import interface_addresses


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


@pytest.fixture(scope="module")
def study(real_slices: list[np.ndarray]) -> list[Any]:
    """A synthetic MR study of real slices, identified as a scanner would send it (built in memory)."""
    return mr_series(real_slices, description="T1 AX PACS")


# -- isolation ---------------------------------------------------------------------------------------------------
@pytest.mark.pacs
@pytest.mark.integration
def test_orthanc_is_reachable_only_through_loopback(orthanc: Orthanc) -> None:
    assert Path(f"/proc/{orthanc.proc.pid}/ns/net").readlink() != Path("/proc/self/ns/net").readlink()
    addresses = interface_addresses()
    assert addresses.get("lo") == "127.0.0.1"
    for name, address in addresses.items():
        assert _refused(address, orthanc.inner_port), f"Orthanc's port answers on {name} ({address})"
        if name != "lo":
            assert _refused(address, orthanc.port), f"the relay answers on {name} ({address})"
    with pytest.raises(PacsError, match="refused the credentials"):
        orthanc.client(password="wrong").search_studies()


# -- the round trip ----------------------------------------------------------------------------------------------
@pytest.mark.pacs
@pytest.mark.integration
def test_store_search_retrieve_and_push_results(
    orthanc: Orthanc, study: list[Any], predictor: Predictor, tmp_path: Path
) -> None:
    pacs = orthanc.client()
    study_uid = str(study[0].StudyInstanceUID)
    mr_uids = [str(ds.SOPInstanceUID) for ds in study]

    stored = pacs.store(study)
    assert sorted(stored.stored) == sorted(mr_uids) and not stored.failed

    (found,) = pacs.search_studies(patient_id=IDENTITY["PatientID"])
    assert found.study_uid == study_uid and found.patient_name == IDENTITY["PatientName"]
    assert found.modalities == ("MR",) and found.instances == 3 and found.series == 1
    assert found.accession_number == study[0].AccessionNumber and found.description == study[0].StudyDescription
    assert pacs.search_studies(patient_id="nobody") == []

    retrieved = {str(ds.SOPInstanceUID): ds for ds in pacs.retrieve_study(study_uid)}
    assert sorted(retrieved) == sorted(mr_uids)
    for original in study:
        np.testing.assert_array_equal(retrieved[str(original.SOPInstanceUID)].pixel_array, original.pixel_array)

    # score what came back, write SR + SC from it (the PACS's own patient and study), push them
    analysed = [analyse(encoded(retrieved[uid]), predictor) for uid in mr_uids]
    written = write_dicom_results(analysed, tmp_path / "out")
    outputs = [pydicom.dcmread(p) for p in (written.sr, *written.captures)]
    pushed = pacs.store(outputs)
    assert sorted(pushed.stored) == sorted(str(ds.SOPInstanceUID) for ds in outputs)

    # Orthanc files them in the same study, under the same patient
    instances = pacs.search_instances(study_uid)
    classes = sorted(i.sop_class_uid for i in instances)
    assert classes == sorted([MRImageStorage] * 3 + [ComprehensiveSRStorage] + [SecondaryCaptureImageStorage] * 3)
    (again,) = pacs.search_studies(study_uid=study_uid)
    assert again.instances == 7 and set(again.modalities) == {"MR", "SR", "OT"}

    # the SR Orthanc serves references the right instances
    sr, back = served_sr(pacs, study_uid)
    assert sr.PatientID == IDENTITY["PatientID"] and sr.StudyInstanceUID == study_uid
    assert evidence_uids(sr) == set(mr_uids)
    groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    top = mr_uids[int(np.argmax([a.prediction.p_tumor for a in analysed]))]
    assert [s.referenced_sop_instance_uid for s in groups["Result"].source_images] == [top]
    for number, uid in enumerate(mr_uids, start=1):
        assert [s.referenced_sop_instance_uid for s in groups[f"Slice {number}"].source_images] == [uid]
    captures = sorted(
        (ds for ds in back if ds.SOPClassUID == SecondaryCaptureImageStorage), key=lambda d: d.InstanceNumber
    )
    assert [str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID) for ds in captures] == mr_uids


@pytest.mark.pacs
@pytest.mark.integration
def test_pull_study_writes_one_file_per_instance(orthanc: Orthanc, study: list[Any], tmp_path: Path) -> None:
    pacs = orthanc.client()
    pacs.store(study)  # idempotent: Orthanc keeps one copy per SOP instance
    study_uid = str(study[0].StudyInstanceUID)
    paths = pacs.pull_study(study_uid, tmp_path / "pulled")
    read = [pydicom.dcmread(p) for p in paths]
    assert {p.name for p in paths} == {f"{ds.SOPInstanceUID}.dcm" for ds in read}
    assert {str(ds.SOPInstanceUID) for ds in read} >= {str(ds.SOPInstanceUID) for ds in study}
    assert all(ds.StudyInstanceUID == study_uid for ds in read)


@pytest.mark.pacs
@pytest.mark.integration
def test_an_unknown_study_is_a_pacs_error(orthanc: Orthanc) -> None:
    with pytest.raises(PacsError, match="retrieve study"):
        orthanc.client().retrieve_study("1.2.3.4.5.6.7.8.9")
    with pytest.raises(PacsError, match="not a DICOM UID"):
        orthanc.client().retrieve_study("../../etc")


# -- without a server ----------------------------------------------------------------------------------------------
def test_an_unreachable_pacs_is_a_pacs_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    pacs = PacsClient(url, username=USER, password="secret", timeout=2, retries=1)
    started = time.monotonic()
    with pytest.raises(PacsError, match="unreachable") as caught:
        pacs.search_studies()
    assert "secret" not in str(caught.value)
    assert time.monotonic() - started < 10  # one retry, 1 s later (not dicomweb-client's 30 s of retries)


def test_credentials_never_ride_in_the_url() -> None:
    with pytest.raises(PacsError, match="not in the URL"):
        PacsClient(f"http://{USER}:secret@127.0.0.1:8042/dicom-web")
    with pytest.raises(PacsError, match="http"):
        PacsClient("file:///etc/passwd")
