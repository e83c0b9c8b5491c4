"""ephemesh side by side with its peers, in one run.

    scripts/bench.sh [--slices 300 600] [--runs 5] [--quick]
    .venv/bin/python bench/run.py [same options] [--no-install]

Generates CT-like 512×512×N series (bone at 300 HU), installs the peers
from ``bench/requirements.txt`` when they are missing (``--no-install``
skips that), then times every case in a fresh process, round-robin (one run
of each case per round, so a busy machine slows every peer alike):

* end to end, series folder → binary STL on disk: ``ephemesh convert``
  (both cores, and one core), a plain pydicom + scikit-image + numpy-stl
  script, and dicom2stl (full resolution, no smoothing or decimation);
* surface extraction alone on the same in-memory int16 volume: ephemesh's
  marching cubes (1 and 2 threads), ``skimage.measure.marching_cubes`` and
  VTK's ``vtkFlyingEdges3D`` on one thread (imports excluded for all);
* STL writing throughput.

Prints one table per size (median, min, peak RSS, triangles, ratios against
every peer), checks the issue's targets, and writes ``bench/results.md``
with the date, the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "_work"
PY = sys.executable
BIN = Path(PY).parent
LEVEL = "300"


class Case:
    """One thing to time: a command, how to read its result, its runs."""

    def __init__(self, name, cmd, *, group, short, reports_seconds=False, after=None,
                 output=None):
        self.name, self.cmd, self.group, self.short = name, cmd, group, short
        # removed before every run, untimed: each peer writes a new file, none
        # overwrites its last one (an overwrite costs differently by how it is
        # done: truncating reuses the old file's cached pages, replacing does not)
        self.output = output
        self.reports_seconds = reports_seconds  # the child prints JSON with "seconds"
        self.after = after  # callable() -> dict of extra facts (triangles, …)
        self.walls, self.rss, self.extra = [], [], {}

    def run_once(self):
        if self.output is not None:
            Path(self.output).unlink(missing_ok=True)
        wall, rss, out = _timed(self.cmd)
        if self.reports_seconds:
            data = json.loads(out.strip().splitlines()[-1])
            wall = data.pop("seconds")
            self.extra.update(data)
        if self.after:
            self.extra.update(self.after())
        self.walls.append(wall)
        self.rss.append(rss)

    @property
    def median(self):
        return statistics.median(self.walls)


def _timed(cmd):
    """Wall time, peak RSS (MB, the child's own, via wait4) and stdout of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    stdout = proc.stdout.read()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} failed ({code}): "
                           f"{stderr.decode(errors='replace').strip()[-800:]}")
    return wall, usage.ru_maxrss / 1024, stdout.decode(errors="replace")


def stl_triangles(path):
    with open(path, "rb") as fh:
        fh.seek(80)
        return {"triangles": int.from_bytes(fh.read(4), "little")}


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB, Python {platform.python_version()}"


def peer_versions():
    code = ("import importlib.metadata as m\n"
            "for p in ('numpy','pydicom','scikit-image','numpy-stl','vtk','dicom2stl'):\n"
            "    try: print(p, m.version(p))\n"
            "    except m.PackageNotFoundError: print(p, '-')\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True).stdout.split("\n")
    try:  # the compiler that built ephemesh's kernels at install time
        cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout
        out.append("kernels compiled by " + cc.splitlines()[0])
    except (OSError, IndexError):
        pass
    return ", ".join(line for line in out if line.strip())


def have_peers():
    vtk = subprocess.run([PY, "-c", "import vtk"], capture_output=True).returncode == 0
    return vtk and (BIN / "dicom2stl").exists()


def make_data(n):
    series = WORK / f"ct{n}"
    if not (series / "done").exists():
        print(f"writing the 512×512×{n} series …", flush=True)
        shutil.rmtree(series, ignore_errors=True)
        subprocess.run([PY, str(HERE / "ctseries.py"), str(series), str(n)], check=True)
        (series / "done").write_text("ok")
    volume = WORK / f"ct{n}.npy"
    if not volume.exists():
        subprocess.run([PY, str(HERE / "ctseries.py"), str(series), str(n), "--npy", str(volume)],
                       check=True)
    return series, volume


def cases_for(n, series, volume):
    out_dir = WORK / f"out{n}"
    out_dir.mkdir(exist_ok=True)

    def stl_path(tag):
        return out_dir / f"{tag}.stl"

    eph = [str(BIN / "ephemesh"), "convert", str(series), "--threshold", LEVEL, "--no-progress"]
    report = out_dir / "report.json"
    cases = [
        Case("ephemesh convert, 2 cores",
             eph + ["-o", str(stl_path("eph2")), "--workers", "2", "--report", str(report)],
             group="e2e", short="ephemesh 2 cores", after=lambda: _report_facts(report),
             output=stl_path("eph2")),
        Case("ephemesh convert, 1 core", eph + ["-o", str(stl_path("eph1")), "--workers", "1"],
             group="e2e", short="ephemesh 1 core", after=lambda: stl_triangles(stl_path("eph1")),
             output=stl_path("eph1")),
        Case("pydicom + skimage + numpy-stl script",
             [PY, str(HERE / "plain_skimage.py"), str(series), str(stl_path("plain")), LEVEL],
             group="e2e", short="plain script", after=lambda: stl_triangles(stl_path("plain")),
             output=stl_path("plain")),
        Case("dicom2stl 0.5.0, full resolution, no smoothing/decimation",
             [str(BIN / "dicom2stl"), "-i", LEVEL, "--disable", "shrink", "--smooth", "0",
              "--reduce", "0.0", "--clean-small", "0.0", "-o", str(stl_path("d2s")), str(series)],
             group="e2e", short="dicom2stl", after=lambda: stl_triangles(stl_path("d2s")),
             output=stl_path("d2s")),
    ]
    extract = [PY, str(HERE / "extract.py"), str(volume)]
    cases += [
        Case("ephemesh marching_cubes, 1 thread", extract + ["ephemesh", "1"], group="surface",
             short="ephemesh 1 thread", reports_seconds=True),
        Case("ephemesh marching_cubes, 2 threads", extract + ["ephemesh", "2"], group="surface",
             short="ephemesh 2 threads", reports_seconds=True),
        Case("skimage.measure.marching_cubes", extract + ["skimage", "1"], group="surface",
             short="skimage", reports_seconds=True),
        Case("VTK vtkFlyingEdges3D, 1 thread", extract + ["vtk", "1"], group="surface",
             short="VTK", reports_seconds=True),
        Case("STL write (binary, blocks of structured records)", extract + ["write", "1"],
             group="write", short="STL write", reports_seconds=True),
    ]
    return cases


def _report_facts(path):
    report = json.loads(Path(path).read_text())
    return {"triangles": report["triangles"], "vertices": report["vertices"],
            "timings": report["timings_s"]}


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def ratio(row, peer):
    return peer.median / row.median


def table(rows, peers):
    head = ("| run | median s | min s | peak RSS MB | triangles | "
            + " | ".join(f"× vs {p.short}" for p in peers) + " |")
    lines = [head, "|---|---:|---:|---:|---:|" + "---:|" * len(peers)]
    for r in rows:
        cells = [f"{ratio(r, p):.2f}×" for p in peers]
        lines.append(f"| {r.name} | {r.median:.3f} | {min(r.walls):.3f} | {max(r.rss):.0f} | "
                     f"{r.extra.get('triangles', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_touch():
    """(ms to write 100 MB of fresh memory, ms to write it again): page faults on
    this machine kind are slow and erratic, and every peer allocates."""
    code = ("import numpy as np, time\n"
            "a = np.empty(100 * 2**20, np.uint8)\n"
            "t = time.perf_counter(); a[:] = 1; t1 = time.perf_counter(); a[:] = 2\n"
            "print((t1 - t) * 1e3, (time.perf_counter() - t1) * 1e3)\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    return tuple(float(v) for v in out.split())


def baseline_rss():
    """Peak RSS (MB) of the interpreter with ephemesh's imports and kernels loaded, no data."""
    code = "import converter.pipeline, converter.marching, pydicom, pydicom.pixels\n"
    return _timed([PY, "-c", code])[1]


def targets(n, cases, baseline):
    by = {c.name: c for c in cases}
    eph2, eph1 = by["ephemesh convert, 2 cores"], by["ephemesh convert, 1 core"]
    plain = by["pydicom + skimage + numpy-stl script"]
    d2s = next(c for c in cases if c.name.startswith("dicom2stl"))
    mc1, mc2 = by["ephemesh marching_cubes, 1 thread"], by["ephemesh marching_cubes, 2 threads"]
    sk, vtk = by["skimage.measure.marching_cubes"], by["VTK vtkFlyingEdges3D, 1 thread"]
    write = next(c for c in cases if c.group == "write")
    volume_mb = n * 512 * 512 * 2 / 1e6
    mesh_mb = 24 * (eph2.extra["vertices"] + eph2.extra["triangles"]) / 1e6  # float64 + int64
    budget = 2.5 * volume_mb + mesh_mb
    mbps = write.extra["bytes"] / 1e6 / write.median

    def mark(ok):
        return "met" if ok else "**not met**"

    rows = [
        ("end to end ≤ 1/5 of dicom2stl", f"2 cores {ratio(eph2, d2s):.2f}×, 1 core "
         f"{ratio(eph1, d2s):.2f}× faster", mark(ratio(eph2, d2s) >= 5),
         mark(ratio(eph1, d2s) >= 5)),
        ("end to end ≤ 1/3 of the plain script", f"2 cores {ratio(eph2, plain):.2f}×, 1 core "
         f"{ratio(eph1, plain):.2f}× faster", mark(ratio(eph2, plain) >= 3),
         mark(ratio(eph1, plain) >= 3)),
        ("extraction ≥ 4× skimage", f"1 thread {ratio(mc1, sk):.2f}×, 2 threads "
         f"{ratio(mc2, sk):.2f}×", mark(ratio(mc2, sk) >= 4), mark(ratio(mc1, sk) >= 4)),
        ("extraction within 2× of VTK (1 thread)", f"1 thread {mc1.median / vtk.median:.2f}× "
         f"VTK's time, 2 threads {mc2.median / vtk.median:.2f}×",
         mark(mc2.median <= 2 * vtk.median), mark(mc1.median <= 2 * vtk.median)),
        ("peak memory ≤ 2.5 × int16 volume + mesh", f"budget {budget:.0f} MB "
         f"({volume_mb:.0f} MB volume, {mesh_mb:.0f} MB mesh); peak RSS 2 cores "
         f"{max(eph2.rss):.0f} MB, 1 core {max(eph1.rss):.0f} MB, of which {baseline:.0f} MB "
         "is the interpreter with its imports and kernels before any data",
         mark(max(eph2.rss) <= budget), mark(max(eph1.rss) <= budget)),
        ("STL writing ≥ 500 MB/s", f"{write.extra['bytes'] / 1e6:.0f} MB in {write.median:.3f} s "
         f"= {mbps:.0f} MB/s", mark(mbps >= 500), ""),
    ]
    lines = ["| target | measured | 2 cores / as used | 1 core |", "|---|---|---|---|"]
    lines += [f"| {t} | {m} | {a} | {b} |" for t, m, a, b in rows]
    return "\n".join(lines)


def scaling(sections):
    if len(sections) < 2:
        return []
    (n0, c0), (n1, c1) = sections[0], sections[-1]
    lines = [f"### Growth with slices ({n0} → {n1}, ×{n1 / n0:g} the data)", "",
             f"| run | {n0} slices s | {n1} slices s | × |", "|---|---:|---:|---:|"]
    for a, b in zip(c0, c1, strict=True):
        lines.append(f"| {a.name} | {a.median:.3f} | {b.median:.3f} | {b.median / a.median:.2f} |")
    return lines + [""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, nargs="+", default=[300, 600])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="300 slices, 3 runs")
    ap.add_argument("--no-install", action="store_true",
                    help="do not pip install the peers (bench/requirements.txt) when missing")
    ap.add_argument("--install", action="store_true", help=argparse.SUPPRESS)  # old spelling
    args = ap.parse_args(argv)
    if args.quick:
        args.slices, args.runs = [300], 3
    if args.runs < 1 or any(n < 2 for n in args.slices):
        ap.error("need --runs >= 1 and at least 2 slices")
    if not have_peers():
        if args.no_install:
            ap.error("dicom2stl and vtk are missing: pip install -r bench/requirements.txt")
        print("installing the peers from bench/requirements.txt …", flush=True)
        subprocess.run([PY, "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")],
                       check=True)
    WORK.mkdir(exist_ok=True)
    load_before = load_average()
    started = time.time()
    sections = []
    for n in args.slices:
        series, volume = make_data(n)
        cases = cases_for(n, series, volume)
        _timed([str(BIN / "ephemesh"), "convert", str(series), "-o", str(WORK / "warm.stl"),
                "--threshold", LEVEL, "--no-progress"])  # warm the page cache
        for r in range(args.runs):
            for case in cases:
                case.run_once()
            print(f"{n} slices: round {r + 1}/{args.runs} done "
                  f"(load {load_average()[0]:.2f})", flush=True)
        sections.append((n, cases))
    load_after = load_average()
    baseline = baseline_rss()
    touch = first_touch()
    write_results(sections, args, load_before, load_after, time.time() - started, baseline, touch)


def write_results(sections, args, load_before, load_after, seconds, baseline, touch):
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = f"scripts/bench.sh --runs {args.runs} --slices {' '.join(map(str, args.slices))}"
    doc = [f"# ephemesh benchmark — {now}", "",
           f"Machine: {machine()}. Load average (1 min) {load_before[0]:.2f} before, "
           f"{load_after[0]:.2f} after; the run took {seconds / 60:.1f} min. Writing 100 MB of "
           f"fresh memory took {touch[0]:.0f} ms, writing it again {touch[1]:.0f} ms (first "
           "touch is slow on this machine kind and costs every peer in proportion to what it "
           "allocates).", "",
           f"Versions: {peer_versions()}.", "",
           f"Command: `{cmd}`. Every case runs in a fresh process, round-robin, {args.runs} "
           "times; median and min of those runs. Peak RSS is the process's own maximum "
           "resident set (wait4). Ratios read *how many times faster the row is than the "
           "column's peer* (peer's median / row's median; below 1× the row is slower). "
           "Extraction-only times exclude imports for every peer (VTK's import alone is "
           "~1 s, loading ephemesh's compiled kernels a few ms); end-to-end times include "
           "everything, interpreter start and imports too; each writes a new STL (its last "
           "one is removed before the run, untimed, so no peer gains or loses by how it "
           "overwrites a file).", ""]
    for n, cases in sections:
        e2e = [c for c in cases if c.group == "e2e"]
        surface = [c for c in cases if c.group == "surface"]
        doc += [f"## 512×512×{n} CT series, bone at {LEVEL} HU", "",
                "### End to end (folder → binary STL on disk)", "",
                table(e2e, [e2e[3], e2e[2], e2e[0], e2e[1]]), "",
                "### Surface extraction alone (same in-memory int16 volume)", "",
                table(surface, [surface[2], surface[3], surface[0]]), ""]
        eph2 = e2e[0]
        if "timings" in eph2.extra:
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in eph2.extra["timings"].items())
            doc += [f"ephemesh's own stage timings (2 cores, last run): {stages}; "
                    "interpreter start, imports and the report's topology are outside `total`.",
                    ""]
        doc += ["### Targets", "", targets(n, cases, baseline), ""]
    doc += scaling(sections)
    text = "\n".join(doc)
    (HERE / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
