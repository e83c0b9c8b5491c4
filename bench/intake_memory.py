"""How much an upload's zip bomb grows the process that takes it in: the
in-memory intake before issue 12 (``web/intake.py`` at b855fa0) against the
streaming one (``worker/intake.py`` into a store on ``/dev/shm``).

    python bench/intake_memory.py old|new THREADS [MEMBERS]

The zip holds MEMBERS (default 64) entries of 1 MiB, each a DICOM file's
first 2 KB and a little noise per MiB, deflated at a ratio of about 80:
under the ratio limit, so they are unpacked and kept.  THREADS take it in
at once (as a web server's threads would).  Prints the process's resident
size at start and its peak (sampled every 5 ms), and the seconds taken.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
import zipfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20
BEFORE = "b855fa0"  # the last commit with the in-memory intake


def bomb(members: int) -> bytes:
    from tests import hostile as H

    with tempfile.TemporaryDirectory() as folder:
        head = sorted(H.write_kind(folder, "rle", n=2))[0].read_bytes()[:2048]
    noise = os.urandom(12 * 1024)
    block = noise + b"\0" * (MB - len(noise))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            with zf.open(f"{i:04d}.dcm", "w") as fh:
                fh.write(head + block)
    return buf.getvalue()


def old_take(data: bytes):
    """The intake as it was: every member's bytes held in memory."""
    source = subprocess.run(["git", "show", f"{BEFORE}:web/intake.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    source = source.replace("from .problems import Refused", "from web.problems import Refused")
    module = sys.modules["old_intake"] = types.ModuleType("old_intake")
    exec(compile(source, "old_intake.py", "exec"), module.__dict__)
    from werkzeug.datastructures import FileStorage

    limits = module.Limits()

    def take():
        module.read_upload([FileStorage(io.BytesIO(data))], limits)

    return take, None


def new_take(data: bytes):
    from worker.intake import Intake, Limits
    from worker.store import DirectoryStore

    root = Path("/dev/shm") / f"ephemesh-bench-{uuid.uuid4().hex[:8]}"
    store = DirectoryStore(root)

    def take():
        intake = Intake(store.writer("input", uuid.uuid4().hex[:16], time.time() + 60),
                        Limits(), spool_dir=root)
        try:
            intake.add(io.BytesIO(data))
            intake.finish()
        finally:
            intake.abort()

    return take, root


def measure(take, threads: int) -> tuple[int, int, float]:
    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = [start]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.monotonic()
    workers = [threading.Thread(target=take) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    sampler.join()
    return start // MB, peak[0] // MB, round(time.monotonic() - t, 1)


def main():
    which, threads = sys.argv[1], int(sys.argv[2])
    members = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    sys.path.insert(0, str(ROOT))
    data = bomb(members)
    take, root = (old_take if which == "old" else new_take)(data)
    start, peak, seconds = measure(take, threads)
    print(f"{which}: {threads} at once, {members} MiB each: resident {start} MB at start, "
          f"{peak} MB at peak (+{peak - start}), {seconds} s")
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
