"""Fuzzing the converter's entry point: mutated series under a memory cap, one fork each.

A run replays the regression corpus (``tests/corpus/regressions``), then
mutates the seed corpus (``tests/corpus/seeds``: two-slice series in every
transfer syntax the converter decodes, a few hundred KB) until its time is
up: bit flips, truncation, zeroed and duplicated runs, length fields set to
0xFFFFFFFF or 0x7FFFFFFF, fragment items with broken lengths, JPEG SOFn /
JPEG-LS SOF55 / JPEG 2000 SIZ sizes blown up, NumberOfFrames, Rows, Columns,
BitsAllocated and SamplesPerPixel rewritten, transfer syntaxes swapped,
chunks spliced from other seeds.  Each input runs ``converter.convert`` in a
forked child of this process under ``RLIMIT_AS`` (its size when forked plus
``--cap-mb``), ``RLIMIT_CPU`` and a wall-clock limit, with its standard
error captured.  A finding is any outcome but a result or a
``ConverterError``: another exception type, a signal (a native abort), the
memory cap reached (``MemoryError``), the time limit, a traceback printed.
Every finding's files are written to ``--findings`` for the regression corpus.

Commands (from the repository root)::

    .venv/bin/python -m tests.fuzzing run --seconds 600 --json fuzz.json --findings /tmp/finds
    .venv/bin/python -m tests.fuzzing seeds      # rebuild tests/corpus/seeds
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
SEEDS = CORPUS / "seeds"
REGRESSIONS = CORPUS / "regressions"

#: transfer syntaxes swapped in (all of one length is not needed: lengths are rewritten)
SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.5",
]
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_US_TAGS = {  # (0028,xxxx) US elements, explicit VR little endian
    "rows": b"\x28\x00\x10\x00US\x02\x00",
    "columns": b"\x28\x00\x11\x00US\x02\x00",
    "bits": b"\x28\x00\x00\x01US\x02\x00",
    "samples": b"\x28\x00\x02\x00US\x02\x00",
}
_FRAMES_TAG = b"\x28\x00\x08\x00IS"
_TS_TAG = b"\x02\x00\x10\x00UI"
_SOF = [bytes([0xFF, m]) for m in (0xC0, 0xC1, 0xC2, 0xC3, 0xF7)]
_SIZ = b"\xff\x4f\xff\x51"
_HUGE32 = (0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0x80000000, 0)


# --------------------------------------------------------------------------- corpus


def load_corpus(root: Path) -> list[tuple[str, list[bytes]]]:
    """``[(name, [file bytes, …])]``: each folder under ``root`` is one series."""
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()
                 and p.suffix == ".dcm"]
        if files:
            out.append((folder.name, files))
    return out


def build_seeds(out: Path = SEEDS) -> None:
    """Write the seed corpus: small two-slice series in every decoded syntax."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import (
        ExplicitVRBigEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        RLELossless,
    )

    from tests import dicomgen as G
    from tests import hostile as H

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    def series(name, vol=None, **kw):
        folder = out / name
        vol = vol if vol is not None else G.render(G.sphere(radius=10), _geo(G))
        paths = G.write_series(folder, vol, geometry=_geo(G, vol.shape[0]), **kw)
        for k, p in enumerate(sorted(paths)):
            p.rename(folder / f"{k}.dcm")

    series("native-explicit")
    series("native-implicit", transfer_syntax=ImplicitVRLittleEndian)
    series("native-big-endian", transfer_syntax=ExplicitVRBigEndian)
    series("rle", transfer_syntax=RLELossless)
    series("jpeg2000", transfer_syntax=JPEG2000Lossless)
    for kind in ("jpeg", "jpeg-ls", "jpeg2000", "rle"):
        folder = out / f"hostile-{kind}"
        paths = H.write_kind(folder, kind, n=2, offset_table=kind == "jpeg2000")
        for k, p in enumerate(sorted(paths)):
            p.rename(folder / f"{k}.dcm")
    for syntax, name in ((RLELossless, "enhanced-rle"), (JPEG2000Lossless, "enhanced-j2k")):
        vol = G.render(G.sphere(radius=10), _geo(G, 4))
        (out / name).mkdir()
        G.write_enhanced(out / name / "0.dcm", vol, _geo(G, 4), transfer_syntax=syntax)
    # pydicom's own files, given a position so that two make a series
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
                 "JPEG2000.dcm", "JPGExtended.dcm", "JPEGLSNearLossless_16.dcm", "image_dfl.dcm"):
        folder = out / ("pydicom-" + name.removesuffix(".dcm"))
        folder.mkdir()
        for k in range(2):
            ds = pydicom.dcmread(get_testdata_file(name))
            ds.ImagePositionPatient = [0, 0, 2 * k]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [1, 1]
            ds.SeriesInstanceUID = "1.2.3.4"
            ds.save_as(folder / f"{k}.dcm")


def _geo(G, n=2):
    return G.make_geometry("axial", size=(n, 32, 32))


# --------------------------------------------------------------------------- mutation


def _set_us(b: bytearray, tag: bytes, rng) -> bool:
    at = b.find(tag)
    if at < 0 or at + len(tag) + 2 > len(b):
        return False
    value = rng.choice([0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 32, 64, 255, 4096, 32767, 65535,
                        rng.randrange(65536)])
    struct.pack_into("<H", b, at + len(tag), value)
    return True


def _rewrite_value(data: bytes, tag: bytes, value: bytes) -> bytes | None:
    """``data`` with the short explicit-VR element starting with ``tag`` holding ``value``."""
    at = data.find(tag)
    if at < 0 or at + 8 > len(data):
        return None
    old = struct.unpack_from("<H", data, at + 6)[0]
    if len(value) % 2:
        value += b" " if tag != _TS_TAG else b"\0"
    return data[:at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + old:]


def mutate(data: bytes, rng: random.Random, donors=()) -> bytes:
    """One to three random mutations of one DICOM file's bytes."""
    for _ in range(rng.randint(1, 3)):
        try:
            data = _mutate_once(data, rng, donors)
        except (struct.error, ValueError, IndexError):
            pass  # a mutation that does not fit this file: the next one
    return data


def _mutate_once(data: bytes, rng, donors) -> bytes:
    b = bytearray(data)
    n = len(b)
    if n < 140:
        return bytes(b)
    op = rng.choice(["flip", "flip", "truncate", "zero", "dup", "delete", "length", "item",
                     "codestream", "codestream", "frames", "us", "syntax", "splice"])
    if op == "flip":
        for _ in range(rng.randint(1, 16)):
            j = rng.randrange(128, n)
            b[j] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        b = b[:rng.randrange(132, n)]
    elif op == "zero":
        j = rng.randrange(132, n)
        m = rng.choice([1, 4, 16, 64])
        b[j:j + m] = bytes(len(b[j:j + m]))
    elif op == "dup":
        j = rng.randrange(132, n)
        k = rng.randint(1, 256)
        b[j:j] = b[j:j + k]
    elif op == "delete":
        j = rng.randrange(132, n)
        del b[j:j + rng.randint(1, 64)]
    elif op == "length":
        j = rng.randrange(132, max(133, min(n - 4, 2000)))
        struct.pack_into("<I", b, j, rng.choice(_HUGE32))
    elif op == "item":
        items = [m.start() for m in re.finditer(re.escape(_ITEM_TAG), bytes(b))]
        if items:
            at = rng.choice(items) + 4
            if at + 4 <= n:
                old = struct.unpack_from("<I", b, at)[0]
                struct.pack_into("<I", b, at, rng.choice(
                    [*_HUGE32, max(0, old - 1), (old + 1) & 0xFFFFFFFF, (old + 4) & 0xFFFFFFFF,
                     old * 2 & 0xFFFFFFFF, 4, 8]))
    elif op == "codestream":
        return _blow_up(bytes(b), rng)
    elif op == "frames":
        value = rng.choice([b"1000000", b"0", b"-1", b"99999999", b"2147483647", b"3", b"1e3"])
        got = _rewrite_value(bytes(b), _FRAMES_TAG, value)
        if got is None:  # add one: (0028,0008) sorts after (0028,0004)
            at = bytes(b).find(b"\x28\x00\x10\x00US")
            if at > 0:
                v = value + (b" " if len(value) % 2 else b"")
                return bytes(b[:at]) + _FRAMES_TAG + struct.pack("<H", len(v)) + v + bytes(b[at:])
            return bytes(b)
        return got
    elif op == "us":
        _set_us(b, _US_TAGS[rng.choice(list(_US_TAGS))], rng)
    elif op == "syntax":
        got = _rewrite_value(bytes(b), _TS_TAG, rng.choice(SYNTAXES).encode())
        return got if got is not None else bytes(b)
    elif op == "splice" and donors:
        donor = rng.choice(donors)
        if len(donor) > 200:
            j, k = rng.randrange(132, n), rng.randrange(132, len(donor))
            b[j:j + rng.randint(8, 512)] = donor[k:k + rng.randint(8, 512)]
    return bytes(b)


def _blow_up(data: bytes, rng) -> bytes:
    """A SIZ or SOFn/SOF55 size (or depth, or components) set to a hostile value."""
    b = bytearray(data)
    spots = [m.start() for m in re.finditer(re.escape(_SIZ), data)]
    for marker in _SOF:
        spots += [m.start() for m in re.finditer(re.escape(marker), data)]
    if not spots:
        return data
    at = rng.choice(spots)
    if data[at:at + 4] == _SIZ:
        field = rng.choice([8, 12, 16, 20, 24, 28, 32, 36])  # Xsiz … YTOsiz
        if at + field + 4 <= len(b):
            struct.pack_into(">I", b, at + field, rng.choice(
                [65535, 65536, 1 << 20, 0xFFFFFFFF, 1, 0, rng.randrange(1 << 32)]))
        if rng.random() < 0.3 and at + 41 < len(b):
            b[at + 40:at + 42] = struct.pack(">H", rng.choice([0, 2, 3, 255, 16384]))
    else:  # SOF: P at +4, Y at +5, X at +7, Nf at +9
        field = rng.choice([4, 5, 7, 9])
        if at + field + 2 <= len(b):
            if field in (4, 9):
                b[at + field] = rng.choice([0, 1, 2, 8, 12, 16, 17, 255])
            else:
                struct.pack_into(">H", b, at + field, rng.choice([0, 1, 128, 20000, 65535]))
    return bytes(b)


# --------------------------------------------------------------------------- running


def _limits(cap_bytes: int, cpu_s: int) -> None:
    from converter.sandbox import address_space

    vm = address_space()
    if vm is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm + cap_bytes, hard))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def _warm(seeds) -> None:
    """Import and load everything once, before the forks: each input's child
    starts with pydicom, every decoder plugin and the compiled kernels loaded."""
    from converter import ConverterError, ConvertOptions, convert, decoders, loading, marching  # noqa: F401

    decoders.prefer_safe_decoders()
    for _, files in seeds:
        try:
            convert(list(files), ConvertOptions())
        except ConverterError:
            pass
    loading.decode(io.BytesIO(seeds[0][1][0]))  # the plugins load in this process too


def run_one(files, *, cap_mb=1024, cpu_s=10, wall_s=15.0, workers=1) -> dict:
    """Convert ``files`` in a forked child; ``{"outcome", "detail", "seconds", "rss_mb"}``.

    Outcomes: ``ok``, ``refused`` (a ConverterError: detail is its code),
    ``exception`` (detail: its type), ``memory`` (MemoryError: the cap was
    reached), ``signal`` (detail: its number), ``timeout``, ``traceback``
    (something printed one).
    """
    from converter import ConverterError, ConvertOptions, convert
    from converter.errors import is_out_of_memory

    read, write = os.pipe()
    err = tempfile.TemporaryFile()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read)
            os.dup2(err.fileno(), 2)
            import faulthandler

            faulthandler.disable()  # (pytest's writes to a descriptor of its own)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            _limits(cap_mb << 20, cpu_s)
            try:
                result = convert(list(files), ConvertOptions(workers=workers))
                out = {"outcome": "ok", "detail": str(result.report["triangles"])}
            except ConverterError as exc:
                out = {"outcome": "refused", "detail": exc.code}
                if "\n" in exc.message:
                    out = {"outcome": "exception", "detail": "multi-line message"}
            except BaseException as exc:
                kind = "memory" if is_out_of_memory(exc) else "exception"
                out = {"outcome": kind, "detail": type(exc).__name__}
                import traceback

                os.write(2, b"[harness] " + traceback.format_exc().encode()[-4000:])
            sys.stderr.flush()
            os.write(write, json.dumps(out).encode())
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    deadline = start + wall_s
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([read], [], [], left)
        if ready:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - start
    err.seek(0)
    stderr = err.read().decode("utf-8", "replace")
    err.close()
    rss_mb = usage.ru_maxrss / 1024
    if timed_out:
        return {"outcome": "timeout", "detail": f">{wall_s:g}s", "seconds": seconds,
                "rss_mb": rss_mb}
    if os.WIFSIGNALED(status):
        return {"outcome": "signal", "detail": str(os.WTERMSIG(status)), "seconds": seconds,
                "rss_mb": rss_mb}
    try:
        out = json.loads(b"".join(chunks))
    except ValueError:
        out = {"outcome": "exception", "detail": f"child exit {os.WEXITSTATUS(status)}"}
    if out["outcome"] in ("ok", "refused") and "Traceback" in stderr:
        out = {"outcome": "traceback", "detail": out["detail"]}
    out.update(seconds=seconds, rss_mb=rss_mb, stderr=stderr[-2000:])
    return out


CLEAN = ("ok", "refused")


def fuzz(seconds: float, *, seed: int = 0, cap_mb: int = 1024, findings: Path | None = None,
         workers: int = 1, max_inputs: int | None = None) -> dict:
    """Replay the regressions, then mutate the seeds for ``seconds``; a summary dict."""
    seeds = load_corpus(SEEDS)
    _warm(seeds)
    regressions = load_corpus(REGRESSIONS)
    donors = [f for _, files in seeds for f in files]
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    codes: Counter = Counter()
    found = []
    summary = {"seed": seed, "cap_mb": cap_mb, "seeds": len(seeds),
               "regressions": len(regressions), "max_seconds": 0.0, "max_rss_mb": 0.0}

    def record(name, files, result):
        outcomes[result["outcome"]] += 1
        if result["outcome"] == "refused":
            codes[result["detail"]] += 1
        summary["max_seconds"] = max(summary["max_seconds"], result["seconds"])
        summary["max_rss_mb"] = max(summary["max_rss_mb"], result["rss_mb"])
        if result["outcome"] not in CLEAN:
            found.append({"name": name, "outcome": result["outcome"],
                          "detail": result["detail"]})
            if findings is not None:
                folder = findings / f"{len(found):03d}-{result['outcome']}"
                folder.mkdir(parents=True, exist_ok=True)
                for k, data in enumerate(files):
                    (folder / f"{k}.dcm").write_bytes(data)
                (folder / "result.json").write_text(json.dumps(result, indent=1))

    t0 = time.monotonic()
    for name, files in regressions:
        record(f"regression {name}", files, run_one(files, cap_mb=cap_mb, workers=workers))
    summary["regression_outcomes"] = dict(outcomes)
    executions = 0
    while time.monotonic() - t0 < seconds and (max_inputs is None or executions < max_inputs):
        name, files = seeds[rng.randrange(len(seeds))]
        files = list(files)
        if rng.random() < 0.5:
            # every slice damaged alike (same layout: the same spots), so the
            # series holds together and reaches the decoders
            state = rng.random()
            files = [mutate(f, random.Random(state), donors) for f in files]
        else:
            k = rng.randrange(len(files))
            files[k] = mutate(files[k], rng, donors)
        record(f"mutant of {name}", files, run_one(files, cap_mb=cap_mb, workers=workers))
        executions += 1
    summary.update(executions=executions, seconds=round(time.monotonic() - t0, 1),
                   outcomes=dict(outcomes), codes=dict(codes), findings=found,
                   max_seconds=round(summary["max_seconds"], 2),
                   max_rss_mb=round(summary["max_rss_mb"], 1))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzzing")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="replay the regressions, then fuzz for a while")
    run.add_argument("--seconds", type=float, default=600)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--cap-mb", type=int, default=1024)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--findings", type=Path)
    run.add_argument("--json", type=Path)
    sub.add_parser("seeds", help="rebuild tests/corpus/seeds")
    args = parser.parse_args(argv)
    if args.command == "seeds":
        build_seeds()
        return 0
    summary = fuzz(args.seconds, seed=args.seed, cap_mb=args.cap_mb, findings=args.findings,
                   workers=args.workers)
    text = json.dumps(summary, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0 if not summary["findings"] else 1


if __name__ == "__main__":
    sys.exit(main())
