"""The C-STORE receiver (worker.scp) over real associations on loopback:
DCMTK's storescu sends a series, which becomes a job whose model comes back
by C-STORE to a receiving node; an unknown AE title or address is refused
at association; an aborted association leaves nothing; a series idle for
EPHEMESH_SCP_IDLE_SECONDS becomes a job while its association is open;
C-ECHO answers; a failing return destination fails the job with a code."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess

import pydicom
import pytest
from pynetdicom import AE, evt

from converter import encapsulated
from tests.helpers import free_port, store_objects, wait_for
from worker.config import Destination, Peer
from worker.scp import SCP

CT = "1.2.840.10008.5.1.4.1.1.2"


class Catcher:
    """A DICOM node that keeps every instance stored to it (the PACS the model returns to)."""

    def __init__(self, ae_title="CATCHER"):
        self.ae_title = ae_title
        self.port = free_port()
        self.received: list[bytes] = []
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(encapsulated.ENCAPSULATED_STL_STORAGE)
        self.server = None

    def start(self):
        def on_store(event):
            self.received.append(event.encoded_dataset())
            return 0x0000

        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, on_store)])
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server = None


@pytest.fixture
def catcher():
    node = Catcher().start()
    yield node
    node.stop()


@pytest.fixture
def receiving(env_factory, catcher, series_bytes, tmp_path):
    """A served receiver (peers: STORESCU and SENDER from 127.0.0.1), one
    worker, models returned to ``catcher``; the series as files on disk."""
    env = env_factory(retention=300)
    settings = dataclasses.replace(
        env.settings, scp_peers=(Peer("STORESCU", "127.0.0.1"), Peer("SENDER", "*")),
        scp_idle_seconds=2,
        return_to=Destination("dicom", catcher.ae_title, "127.0.0.1", catcher.port))
    env.settings = settings
    env.service.settings = env.service.ctx.settings = settings
    env.start_workers(1, EPHEMESH_RETURN_TO=settings.return_to.setting)
    scp = SCP(env.service, settings, port=free_port(), ae_title="EPHEMESH",
              peers=settings.scp_peers, host="127.0.0.1").start()
    folder = tmp_path / "series"
    folder.mkdir()
    for i, data in enumerate(series_bytes):
        (folder / f"s{i:03d}.dcm").write_bytes(data)
    yield env, scp, folder
    scp.stop()


def _storescu(port, folder, aet="STORESCU"):
    binary = shutil.which("storescu")
    assert binary, "storescu (Debian's dcmtk) is missing: run scripts/setup.sh --test"
    return subprocess.run([binary, "-aet", aet, "-aec", "EPHEMESH", "+sd", "+r", "127.0.0.1",
                           str(port), str(folder)], capture_output=True, text=True, timeout=60)


def _job_of(env, scp, owner="peer:STORESCU"):
    job_id = wait_for(lambda: scp.receiver.jobs and scp.receiver.jobs[0], 20, "a job")
    return env.wait_job(job_id, owner, timeout=90)


def test_a_series_sent_by_storescu_is_converted_and_comes_back_as_encapsulated_stl(
        receiving, catcher, series_bytes):
    env, scp, folder = receiving
    out = _storescu(scp.port, folder)
    assert out.returncode == 0, out.stdout + out.stderr
    view = _job_of(env, scp)
    assert view["status"] == "done", view
    instance = wait_for(lambda: catcher.received and catcher.received[0], 30, "the model back")
    stl = env.service.open_result(view["id"], owner="peer:STORESCU").file
    assert encapsulated.payload(instance) == stl.read()
    ds = pydicom.dcmread(io.BytesIO(instance))
    source = pydicom.dcmread(io.BytesIO(series_bytes[0]), stop_before_pixels=True)
    assert ds.PatientName == source.PatientName and ds.PatientID == source.PatientID
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert len(ds.SourceInstanceSequence) == len(series_bytes)
    assert view["report"]["series"]  # the job's report is the usual one
    assert scp.receiver.pending() == 0


def test_an_unknown_calling_ae_title_is_refused_at_association(receiving):
    env, scp, folder = receiving
    out = _storescu(scp.port, folder, aet="INTRUDER")
    assert out.returncode != 0
    assert "Calling AE Title Not Recognized" in out.stdout + out.stderr
    assert scp.receiver.jobs == [] and scp.receiver.pending() == 0


def test_an_aborted_association_leaves_nothing_and_c_echo_answers(receiving, series_bytes):
    env, scp, _ = receiving
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CT, pydicom.uid.ExplicitVRLittleEndian)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="EPHEMESH")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    for data in series_bytes[:5]:
        assert assoc.send_c_store(pydicom.dcmread(io.BytesIO(data))).Status == 0x0000
    assert scp.receiver.pending() == 1
    assoc.abort()
    wait_for(lambda: scp.receiver.pending() == 0, 10, "the aborted series to go")
    assert scp.receiver.jobs == []
    assert store_objects(env.settings) == []


def test_a_series_idle_while_its_association_stays_open_becomes_a_job(receiving,
                                                                       series_bytes):
    env, scp, _ = receiving
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CT, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="EPHEMESH")
    try:
        for data in series_bytes:
            assert assoc.send_c_store(pydicom.dcmread(io.BytesIO(data))).Status == 0x0000
        view = _job_of(env, scp, owner="peer:SENDER")  # idle 2 s, association still open
        assert view["status"] == "done"
        assert assoc.is_established
    finally:
        assoc.release()


def test_a_destination_that_refuses_fails_the_job_with_a_code(receiving, catcher):
    env, scp, folder = receiving
    catcher.stop()  # nobody listens there any more
    out = _storescu(scp.port, folder)
    assert out.returncode == 0
    view = _job_of(env, scp)
    assert view["status"] == "failed"
    assert view["error"]["code"] == "return_failed"
    assert f"{catcher.port}" in view["error"]["message"]
    assert store_objects(env.settings) == []  # neither the upload nor the model stays
