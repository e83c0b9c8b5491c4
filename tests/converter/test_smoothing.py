"""The default smoothing on thick slices: no terraces, no shrinking, nothing moved.

Phantoms scanned as a thick-slice CT or MR is: 0.5 mm pixels, 3 mm slices,
each voxel sampled at its centre with a ramp one pixel wide, so marching
cubes leaves terraces between the slices.  The truth is analytic (a sphere,
a tilted capped cylinder), so the mesh's distance to the true surface is
measured in mm: RMS over the surface (area-weighted at the triangles'
centres) ≤ 0.25 mm and volume within 1 % with the defaults; ``smooth=0`` is
raw marching cubes.
"""

from __future__ import annotations

import numpy as np
import pytest

from converter import ConvertOptions, convert
from converter import mesh as M
from converter.options import OPTIONS
from tests import dicomgen as G

PIXEL, SLICE = 0.5, 3.0
CENTER = (0.3, -0.2, 0.7)  # off the grid
PHANTOMS = {
    "sphere": lambda: G.sphere(CENTER, radius=25.0),
    "tilted_cylinder": lambda: G.cylinder(CENTER, axis=(0.0, 0.5, 0.866), radius=12.5,
                                          length=40.0),
}
#: (modality, value inside, value outside, options): levels halfway, where the
#: edge is (a level off halfway moves the surface by the data's own ambiguity:
#: on a terrace, a fraction of a slice)
CONTRASTS = {
    "ct": ("CT", 1000, -400, dict(preset="bone")),  # 300 HU
    "mr": ("MR", 900, 100, dict()),  # auto (Otsu)
}


def _scan(tmp_path, phantom, contrast):
    modality, inside, outside, options = CONTRASTS[contrast]
    rows = int(np.ceil(2 * np.abs(phantom.bbox).max() / PIXEL)) + 8
    slices = int(np.ceil(2 * np.abs(phantom.bbox[:, 2]).max() / SLICE)) + 4
    geometry = G.make_geometry("axial", size=(slices, rows, rows), spacing=(PIXEL, PIXEL),
                               slice_gaps=SLICE)
    volume = G.render(phantom, geometry, fg=inside, bg=outside, width=PIXEL)
    G.write_series(tmp_path, volume, geometry=geometry, modality=modality,
                   rescale=(1.0, -1024.0) if modality == "CT" else (1.0, 0.0))
    return options


def _rms(phantom, verts, faces):
    tri = np.asarray(verts, float)[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    distance = phantom.signed_distance(tri.mean(axis=1))
    return float(np.sqrt(np.sum(area * distance**2) / area.sum()))


@pytest.mark.parametrize("contrast", CONTRASTS)
@pytest.mark.parametrize("name", PHANTOMS)
def test_default_smoothing_removes_the_terraces_and_keeps_the_volume(tmp_path, name, contrast):
    phantom = PHANTOMS[name]()
    options = _scan(tmp_path, phantom, contrast)
    raw = convert([tmp_path], ConvertOptions(smooth=0, **options))
    smooth = convert([tmp_path], ConvertOptions(**options))
    assert smooth.report["options"]["smooth"] == OPTIONS["smooth"].default > 0
    raw_rms, rms = _rms(phantom, raw.verts, raw.faces), _rms(phantom, smooth.verts, smooth.faces)
    assert raw_rms > 0.3  # the terraces are there
    assert rms <= 0.25, (raw_rms, rms)
    assert smooth.report["volume_mm3"] == pytest.approx(phantom.volume, rel=0.01)
    np.testing.assert_allclose(smooth.report["centroid_mm"], phantom.centroid, atol=0.1)
    np.testing.assert_allclose(smooth.report["bbox_mm"], phantom.bbox, atol=SLICE / 2)
    check = M.check(smooth.verts, smooth.faces)
    assert check.closed_manifold, check
    assert raw.report["triangles"] == smooth.report["triangles"]  # same mesh, moved


def test_smooth_zero_is_raw_marching_cubes(tmp_path):
    """``smooth=0``: the vertices where marching cubes put them, mapped to mm."""
    from converter.marching import marching_cubes

    phantom = G.sphere(radius=8.0)
    geometry = G.make_geometry("axial", size=(12, 40, 40), spacing=(PIXEL, PIXEL),
                               slice_gaps=SLICE)
    volume = G.render(phantom, geometry, width=PIXEL)
    G.write_series(tmp_path, volume, geometry=geometry)
    raw = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, smooth=0))
    verts, _ = marching_cubes(volume, G.MID_HU, pad=-1000)
    mm = geometry.positions[0] + verts[:, [2, 1, 0]] * (PIXEL, PIXEL, SLICE)  # axial
    np.testing.assert_allclose(np.unique(raw.verts.round(3), axis=0),
                               np.unique(mm.round(3), axis=0), atol=2e-3)
    smooth = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, smooth=3))
    assert np.abs(smooth.verts - raw.verts).max() > 0.05
