"""A private Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) as the
PACS of the tests: its own ports, storage and configuration under a test
directory; a few REST calls (upload, send by C-STORE or STOW-RS, find)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.helpers import free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class Orthanc:
    def __init__(self, root: Path, *, ae_title="ORTHANC", modalities=None, dicomweb=None):
        self.root = root
        self.ae_title = ae_title
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.modalities = modalities or {}  # name -> (AE, host, port)
        self.dicomweb = dicomweb or {}  # name -> {"Url": ..., "HttpHeaders": {...}}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout=60) -> Orthanc:
        binary = shutil.which("Orthanc")
        assert binary, "Orthanc (Debian's orthanc) is missing: run scripts/setup.sh --test"
        assert DICOMWEB_PLUGIN.exists(), "orthanc-dicomweb is missing: run scripts/setup.sh --test"
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "ephemesh-test-pacs", "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomModalities": {name: list(m) for name, m in self.modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": self.dicomweb},
            "StableAge": 1, "HttpTimeout": 60, "DicomScuTimeout": 30,
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([binary, str(path)], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.root)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log_text()
            try:
                if requests.get(self.url + "/system", timeout=2).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError(f"Orthanc did not answer: {self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.log.close()

    def log_text(self) -> str:
        path = self.root / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------ REST
    def upload(self, files: list[bytes]) -> str:
        """Store instances; return the Orthanc id of their series."""
        series = None
        for data in files:
            resp = requests.post(self.url + "/instances", data=data, timeout=30)
            resp.raise_for_status()
            series = resp.json()["ParentSeries"]
        return series

    def send_by_c_store(self, modality: str, resource: str) -> dict:
        resp = requests.post(f"{self.url}/modalities/{modality}/store",
                             json={"Resources": [resource], "Synchronous": True}, timeout=120)
        resp.raise_for_status()
        return resp.json()

    def send_by_stow(self, server: str, resource: str) -> dict:
        resp = requests.post(f"{self.url}/dicom-web/servers/{server}/stow",
                             json={"Resources": [resource], "Synchronous": True}, timeout=120)
        resp.raise_for_status()
        return resp.json() if resp.content else {}

    def instances_of_modality(self, modality: str) -> list[str]:
        """The Orthanc ids of every instance in a series of ``modality``."""
        resp = requests.post(self.url + "/tools/find", timeout=30,
                             json={"Level": "Series", "Query": {"Modality": modality}})
        resp.raise_for_status()
        found = []
        for series in resp.json():
            found += requests.get(f"{self.url}/series/{series}", timeout=30).json()["Instances"]
        return found

    def file(self, instance: str) -> bytes:
        resp = requests.get(f"{self.url}/instances/{instance}/file", timeout=30)
        resp.raise_for_status()
        return resp.content
