"""Smoothing and decimation side by side with VTK (and fast-simplification) on the
same meshes: time, RMS distance to the analytic surface, bad edges, volume change.

    .venv/bin/python bench/mesh_quality.py [--runs 3] [--ct-slices 300] [--out FILE]

Smoothing: a sphere (radius 25 mm) and a tilted capped cylinder scanned at
0.5 mm pixels and 3 mm slices (sampled at the voxel centres, a ramp one pixel
wide: marching cubes leaves terraces); every smoother gets ephemesh's raw
marching-cubes mesh, except VTK's Surface Nets, which makes its own from the
mask.  Decimation: the default-smoothed sphere (RMS against the truth) and
the benchmark CT's bone surface (``converter.sample``, 512×512×N, 300 HU:
time and edges).  Prints a Markdown section (and appends it to ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converter import mesh as M
from converter.marching import marching_cubes

PIXEL, SLICE = 0.5, 3.0
SPACING = np.array([SLICE, PIXEL, PIXEL])  # (slice, row, column) mm
CENTRE = np.array([0.3, -0.2, 0.7])


def sphere_sd(p):
    return 25.0 - np.linalg.norm(p - CENTRE, axis=-1)


AXIS = np.array([0.0, 0.5, np.sqrt(0.75)])


def cylinder_sd(p):
    q = p - CENTRE
    along = q @ AXIS
    across = np.linalg.norm(q - along[..., None] * AXIS, axis=-1)
    dr, dz = across - 12.5, np.abs(along) - 20.0
    return -(np.hypot(np.maximum(dr, 0), np.maximum(dz, 0)) + np.minimum(np.maximum(dr, dz), 0))


SHAPES = {"sphere r=25": (sphere_sd, 4 / 3 * np.pi * 25**3),
          "tilted cylinder r=12.5 l=40": (cylinder_sd, np.pi * 12.5**2 * 40)}


def scan(sd):
    """(volume int16 HU, origin mm (z, y, x)): 1000 inside, -1000 outside."""
    n_xy, n_z = 124, 24
    z = (np.arange(n_z) - n_z / 2) * SLICE
    x = (np.arange(n_xy) - n_xy / 2) * PIXEL
    zz, yy, xx = np.meshgrid(z, x, x, indexing="ij")
    pts = np.stack([xx, yy, zz], axis=-1)
    frac = np.clip(0.5 + sd(pts) / PIXEL, 0.0, 1.0)
    return np.rint(-1000 + 2000 * frac).astype(np.int16), np.array([z[0], x[0], x[0]])


def to_mm(ijk, origin):
    """Index (slice, row, column) → (x, y, z) mm."""
    p = origin + np.asarray(ijk, np.float64) * SPACING
    return p[:, ::-1].copy()


def rms(verts, faces, sd):
    tri = np.asarray(verts, np.float64)[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return float(np.sqrt(np.sum(area * sd(tri.mean(axis=1)) ** 2) / area.sum()))


def best(runs, fn, *args, **kwargs):
    """(the best wall time of ``runs`` calls, the last result)."""
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return min(times), out


# ----------------------------------------------------------------------------- VTK


def to_vtk(verts, faces):
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray

    points = vtk.vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(verts, np.float64), deep=True))
    cells = np.hstack([np.full((len(faces), 1), 3), faces]).astype(np.int64).ravel()
    polys = vtk.vtkCellArray()
    polys.SetCells(len(faces), numpy_to_vtkIdTypeArray(cells, deep=True))
    poly = vtk.vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(polys)
    return poly


def from_vtk(poly):
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    tri = vtk.vtkTriangleFilter()
    tri.SetInputData(poly)
    tri.Update()
    out = tri.GetOutput()
    verts = vtk_to_numpy(out.GetPoints().GetData()).astype(np.float64)
    conn = vtk_to_numpy(out.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return verts, conn.astype(np.int64)


def vtk_windowed_sinc(verts, faces, iterations=20, passband=0.1):
    import vtk

    f = vtk.vtkWindowedSincPolyDataFilter()
    f.SetInputData(to_vtk(verts, faces))
    f.SetNumberOfIterations(iterations)
    f.SetPassBand(passband)
    f.NormalizeCoordinatesOn()
    f.BoundarySmoothingOff()
    f.FeatureEdgeSmoothingOff()
    f.NonManifoldSmoothingOn()
    f.Update()
    return from_vtk(f.GetOutput())


def vtk_surface_nets(volume, origin):
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    mask = (volume > 0).astype(np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.SetSpacing(PIXEL, PIXEL, SLICE)
    image.SetOrigin(origin[2], origin[1], origin[0])
    image.GetPointData().SetScalars(numpy_to_vtk(mask.ravel(), deep=True))
    nets = vtk.vtkSurfaceNets3D()
    nets.SetInputData(image)
    nets.SetValue(0, 1)
    nets.SetOutputMeshTypeToTriangles()
    nets.SmoothingOn()
    nets.Update()
    return from_vtk(nets.GetOutput())


def vtk_quadric(verts, faces, keep):
    import vtk

    f = vtk.vtkQuadricDecimation()
    f.SetInputData(to_vtk(verts, faces))
    f.SetTargetReduction(1 - keep)
    f.VolumePreservationOn()
    f.Update()
    return from_vtk(f.GetOutput())


def ephemesh_decimate(verts, faces, keep):
    return M.decimate(verts, faces, fraction=keep)


def fast_simplification(verts, faces, keep):
    import fast_simplification as fs

    v, f = fs.simplify(np.asarray(verts, np.float32), np.asarray(faces, np.int32),
                       target_reduction=1 - keep)
    return v.astype(np.float64), f.astype(np.int64)


# ----------------------------------------------------------------------------- rows


def row(name, seconds, verts, faces, sd, truth):
    check = M.check(verts, faces)
    if check.volume < 0:  # VTK's surface nets winds inward here: measure it all the same
        faces = faces[:, [0, 2, 1]]
        check = M.check(verts, faces)
    error = f"{rms(verts, faces, sd):.3f}" if sd is not None else "–"
    return (f"| {name} | {seconds:.3f} | {len(faces)} | {error} | {check.nonmanifold_edges} | "
            f"{check.boundary_edges} | {100 * (check.volume / truth - 1):+.2f} % |")


HEAD = ("| method | s (best) | triangles | RMS to truth mm | edges on >2 triangles | "
        "boundary edges | volume vs truth |\n|---|---:|---:|---:|---:|---:|---:|")


def smoothing_tables(runs):
    lines = []
    for shape, (sd, truth) in SHAPES.items():
        volume, origin = scan(sd)
        v_idx, faces = marching_cubes(volume, 0.0, pad=-1000)
        raw = to_mm(v_idx, origin)
        if M.signed_volume(raw, faces) < 0:
            faces = faces[:, [0, 2, 1]]
        half = 0.5 * SPACING.min() / SPACING
        lines += [f"\n#### {shape}, {PIXEL} mm pixels, {SLICE} mm slices\n", HEAD,
                  row("raw marching cubes (ephemesh, --smooth 0)", 0.0, raw, faces, sd, truth)]
        for n in (10, 30):
            t, (sv, _) = best(runs, M.constrained_smooth, v_idx, faces, n, half)
            label = "default" if n == 10 else "more"
            lines.append(row(f"ephemesh constrained smoothing, {n} iterations ({label})", t,
                             to_mm(sv, origin), faces, sd, truth))
        for n, band in ((20, 0.1), (20, 0.01)):
            t, (wv, wf) = best(runs, vtk_windowed_sinc, raw, faces, n, band)
            lines.append(row(f"VTK vtkWindowedSincPolyDataFilter, {n} iterations, passband "
                             f"{band}", t, wv, wf, sd, truth))
        t, (nv, nf) = best(runs, vtk_surface_nets, volume, origin)
        lines.append(row("VTK vtkSurfaceNets3D (its own surface, constrained smoothing)", t,
                         nv, nf, sd, truth))
    return lines


def decimation_tables(runs, ct_slices):
    lines = []
    sd, truth = SHAPES["sphere r=25"]
    volume, origin = scan(sd)
    v_idx, faces = marching_cubes(volume, 0.0, pad=-1000)
    sv, _ = M.constrained_smooth(v_idx, faces, 10, 0.5 * SPACING.min() / SPACING)
    base = to_mm(sv, origin)
    if M.signed_volume(base, faces) < 0:
        faces = faces[:, [0, 2, 1]]
    meshes = [("the default-smoothed sphere", base, faces, sd, truth)]
    if ct_slices:
        from converter.sample import sample_volume

        ct = sample_volume(ct_slices, 512)
        cv, cf = marching_cubes(ct, 300, pad=-1000, workers=2)
        del ct
        cm = cv.astype(np.float64) * (1.0, 0.7, 0.7)
        if M.signed_volume(cm, cf) < 0:
            cf = cf[:, [0, 2, 1]]
        meshes.append((f"the benchmark CT's bone, 512×512×{ct_slices}", cm, cf, None,
                       M.signed_volume(cm, cf)))
    for label, verts, faces, sd, truth in meshes:
        lines += [f"\n#### {label}: {len(faces)} triangles\n",
                  HEAD.replace("volume vs truth", "volume vs " + ("truth" if sd else "input"))]
        for keep in (0.5, 0.2, 0.1):
            for name, fn in (("ephemesh decimate", ephemesh_decimate),
                             ("fast-simplification 0.1", fast_simplification),
                             ("VTK vtkQuadricDecimation", vtk_quadric)):
                t, (dv, df) = best(runs if len(faces) < 10**6 else 1, fn, verts, faces, keep)
                lines.append(row(f"{name}, keep {keep:g}", t, dv, df, sd, truth))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ct-slices", type=int, default=300, help="0: skip the CT mesh")
    parser.add_argument("--out", type=Path, help="append the section to this file")
    args = parser.parse_args(argv)
    import os

    import vtk

    load = os.getloadavg()[0]
    lines = ["\n## Mesh quality: smoothing and decimation side by side\n",
             f"Command: `.venv/bin/python bench/mesh_quality.py --runs {args.runs} --ct-slices "
             f"{args.ct_slices}`. VTK {vtk.vtkVersion.GetVTKVersion()}. Load average (1 min) "
             f"{load:.2f} before on {os.cpu_count()} cores: times are best of {args.runs} on a "
             "loaded machine, compare them within a table only. RMS is area-weighted over the "
             "triangles' centres against the analytic surface.\n",
             "### Smoothing (thick slices: terraces)"]
    lines += smoothing_tables(args.runs)
    lines += ["\n### Decimation (the same mesh for every method)"]
    lines += decimation_tables(args.runs, args.ct_slices)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
