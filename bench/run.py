"""ephemesh side by side with its peers, in one run.

    .venv/bin/python bench/run.py [--install] [--slices 300 600] [--runs 5] [--quick]

Generates a CT-like 512×512×N series (bone at 300 HU), then times, each in a
fresh process, N runs apiece:

* end to end, series folder → binary STL on disk: ``ephemesh convert``
  (both cores, and one core), a plain pydicom + scikit-image + numpy-stl
  script, and dicom2stl (full resolution, no smoothing or decimation);
* surface extraction alone on the same in-memory volume: ephemesh's
  marching cubes (1 and 2 threads), ``skimage.measure.marching_cubes`` and
  VTK's ``vtkFlyingEdges3D`` on one thread;
* STL writing throughput.

Prints one table (median, min, peak RSS, triangles, ratios) and writes it to
``bench/results.md`` with the date and the machine.  dicom2stl and vtk come
from the ``bench`` extra only (``--install`` installs them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
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


def run_child(cmd, env=None):
    """Run ``cmd``; return (wall seconds, peak RSS MB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0:3]} failed ({proc.returncode}): {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024, out


def measure(name, cmd, runs, env=None, parse=None):
    walls, rss, extra = [], [], None
    for _ in range(runs):
        wall, peak, out = run_child(cmd, env)
        if parse:  # the child reports its own timing (extraction-only runs)
            data = json.loads(out.strip().splitlines()[-1])
            wall, extra = data["seconds"], data
        walls.append(wall)
        rss.append(peak)
    return {"name": name, "median": statistics.median(walls), "min": min(walls),
            "rss_mb": max(rss), "extra": extra}


def count_triangles(path):
    with open(path, "rb") as fh:
        fh.seek(80)
        return int.from_bytes(fh.read(4), "little")


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB, Python {platform.python_version()}"


def have(module):
    return subprocess.run([PY, "-c", f"import {module}"], capture_output=True).returncode == 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, nargs="+", default=[300, 600])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--install", action="store_true", help="pip install the bench extra first")
    ap.add_argument("--quick", action="store_true", help="one size (300), 3 runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.slices, args.runs = [300], 3
    if args.install:
        subprocess.run([PY, "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")],
                       check=True)
    WORK.mkdir(exist_ok=True)
    sections = []
    for n in args.slices:
        series = WORK / f"ct{n}"
        if not (series / "done").exists():
            subprocess.run([PY, str(HERE / "ctseries.py"), str(series), str(n)], check=True)
            (series / "done").write_text("ok")
        volume_npy = WORK / f"ct{n}.npy"
        if not volume_npy.exists():
            subprocess.run([PY, str(HERE / "ctseries.py"), str(series), str(n), "--npy",
                            str(volume_npy)], check=True)
        sections.append(run_size(n, series, volume_npy, args.runs))
    write_results(sections, args)


def run_size(n, series, volume_npy, runs):
    out = WORK / "out.stl"
    rows = []
    ephemesh = [str(BIN / "ephemesh"), "convert", str(series), "-o", str(out),
                "--threshold", "300", "--no-progress"]
    rows.append(measure("ephemesh convert (2 cores)", ephemesh + ["--workers", "2"], runs))
    rows[-1]["triangles"] = count_triangles(out)
    rows.append(measure("ephemesh convert (1 core)", ephemesh + ["--workers", "1"], runs))
    rows[-1]["triangles"] = count_triangles(out)
    rows.append(measure("pydicom + skimage + numpy-stl script",
                        [PY, str(HERE / "plain_skimage.py"), str(series), str(out), "300"], runs))
    rows[-1]["triangles"] = count_triangles(out)
    if (BIN / "dicom2stl").exists():
        rows.append(measure("dicom2stl 0.5.0 (full resolution, no smoothing/decimation)",
                            [str(BIN / "dicom2stl"), "-i", "300", "--disable", "shrink",
                             "--smooth", "0", "--reduce", "0.0", "--clean-small", "0.0",
                             "-o", str(out), str(series)], runs))
        rows[-1]["triangles"] = count_triangles(out)
    else:
        rows.append({"name": "dicom2stl", "missing": True})
    extraction = []
    for name, args in [("ephemesh marching_cubes, 1 thread", ["ephemesh", "1"]),
                       ("ephemesh marching_cubes, 2 threads", ["ephemesh", "2"]),
                       ("skimage.measure.marching_cubes", ["skimage", "1"]),
                       ("VTK vtkFlyingEdges3D, 1 thread", ["vtk", "1"])]:
        if args[0] == "vtk" and not have("vtk"):
            extraction.append({"name": name, "missing": True})
            continue
        row = measure(name, [PY, str(HERE / "extract.py"), str(volume_npy), *args], runs, parse=True)
        row["triangles"] = row["extra"]["triangles"]
        extraction.append(row)
    write = measure("STL write (binary, one structured-array write)",
                    [PY, str(HERE / "extract.py"), str(volume_npy), "write", "1"], runs, parse=True)
    return {"slices": n, "end_to_end": rows, "extraction": extraction, "write": write}


def ratio(a, b):
    return f"{b / a:.2f}×" if a and b else "–"


def table(rows, reference_names):
    lines = ["| run | median s | min s | peak RSS MB | triangles | " +
             " | ".join(f"× vs {r}" for r in reference_names) + " |",
             "|---|---|---|---|---|" + "---|" * len(reference_names)]
    refs = {r["name"]: r for r in rows if not r.get("missing")}
    for r in rows:
        if r.get("missing"):
            lines.append(f"| {r['name']} | not installed | | | | " + " | " * len(reference_names))
            continue
        cells = []
        for ref in reference_names:
            match = next((v for k, v in refs.items() if k.startswith(ref)), None)
            cells.append(ratio(r["median"], match["median"]) if match else "–")
        lines.append(f"| {r['name']} | {r['median']:.3f} | {r['min']:.3f} | {r['rss_mb']:.0f} | "
                     f"{r.get('triangles', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(sections, args):
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = [f"# ephemesh benchmark — {now}", "",
           f"Machine: {machine()}.", "",
           f"Command: `.venv/bin/python bench/run.py --runs {args.runs} --slices "
           f"{' '.join(map(str, args.slices))}`; medians of {args.runs} runs, each in a fresh "
           "process. Ratios are *how many times faster ephemesh's row is* read against the "
           "column's peer: a peer's time divided by the row's time.", ""]
    for sec in sections:
        n = sec["slices"]
        doc += [f"## 512×512×{n} CT series, bone at 300 HU", "", "### End to end (folder → STL on disk)", "",
                table(sec["end_to_end"], ["dicom2stl", "pydicom + skimage"]), "",
                "### Surface extraction alone (same in-memory int16 volume)", "",
                table(sec["extraction"], ["skimage", "VTK"]), ""]
        w = sec["write"]
        mb = w["extra"]["bytes"] / 1e6
        doc += [f"STL write: {mb:.0f} MB in {w['median']:.3f} s median = "
                f"**{mb / w['median']:.0f} MB/s**.", ""]
    text = "\n".join(doc)
    (HERE / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
