"""The output formats' writers side by side on the benchmark CT's mesh.

    python bench/formats.py [--slices N] [--runs R] [--out bench/formats-results.md]

The mesh is the benchmark series' surface at 300 HU (``converter.sample``,
512×512×N, marching cubes), vertices in float64 millimetres as the pipeline
holds them.  Each run writes it in every format to a new file on /dev/shm,
round-robin (one run of every format per round, so a busy machine slows
each alike), through ``converter.formats.write_model``.  The table gives
the median and minimum seconds, the file's size, MB/s of mesh data (the
mesh as binary STL: 50 bytes a triangle, the same for every format) and of
the file, and the ratio to the STL writer; the issue's target for 3MF is
200 MB/s of mesh data or within 2× of the STL writer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from converter import formats
from converter.marching import marching_cubes
from converter.sample import sample_volume

HERE = Path(__file__).resolve().parent
ORDER = ("stl", "3mf", "ply", "obj", "stl-ascii")


def mesh(slices: int):
    verts, faces = marching_cubes(sample_volume(slices, 512), 300.0, workers=2)
    return verts.astype(np.float64) * 0.7 - 180.0, faces


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "formats-results.md"))
    parser.add_argument("--skip-ascii", action="store_true", help="leave out ASCII STL (slow)")
    parser.add_argument("--workers", type=int, default=2,
                        help="ConvertOptions.workers for the writers (default 2)")
    args = parser.parse_args(argv)
    verts, faces = mesh(args.slices)
    part = [formats.Part("model", verts, faces)]
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
    order = [f for f in ORDER if not (args.skip_ascii and f == "stl-ascii")]
    times = {f: [] for f in order}
    sizes = {}
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for fmt in order:
            path = Path(folder) / f"ephemesh-bench-{os.getpid()}{formats.FORMATS[fmt].extension}"
            if fmt == "obj":
                path = path.with_suffix(".zip")  # one file: the .obj and .mtl zipped
            try:
                t = time.perf_counter()
                sizes[fmt] = formats.write_model(part, fmt, path, workers=args.workers)
                times[fmt].append(time.perf_counter() - t)
            finally:
                path.unlink(missing_ok=True)
    load_after = os.getloadavg()
    mesh_mb = (84 + 50 * len(faces)) / 1e6
    stl = statistics.median(times["stl"])
    rows = ["| format | median s | min s | file MB | mesh MB/s | file MB/s | × STL time |",
            "|---|---|---|---|---|---|---|"]
    for fmt in order:
        med = statistics.median(times[fmt])
        rows.append(f"| {fmt} | {med:.3f} | {min(times[fmt]):.3f} | {sizes[fmt] / 1e6:.1f} | "
                    f"{mesh_mb / med:.0f} | {sizes[fmt] / 1e6 / med:.0f} | {med / stl:.2f} |")
    threemf = statistics.median(times["3mf"])
    ok = mesh_mb / threemf >= 200 or threemf <= 2 * stl
    text = "\n".join([
        "# Output formats: writing the benchmark mesh",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (the machine "
        "is shared: ratios matter more than seconds).",
        f"Mesh: the 512×512×{args.slices} benchmark series at 300 HU, {len(faces):,} triangles, "
        f"{len(verts):,} vertices ({mesh_mb:.0f} MB as binary STL); {args.runs} runs of each "
        f"format, round-robin, to files on {folder}.",
        f"Command: `.venv/bin/python bench/formats.py --slices {args.slices} --runs {args.runs} "
        f"--workers {args.workers}"
        + (" --skip-ascii" if args.skip_ascii else "") + "`",
        "",
        *rows,
        "",
        f"Target (3MF ≥ 200 MB/s of mesh data, or within 2× of the STL writer): "
        f"{'met' if ok else 'NOT met'} ({mesh_mb / threemf:.0f} MB/s, {threemf / stl:.2f}× "
        "the STL writer's time).",
        "",
    ])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
