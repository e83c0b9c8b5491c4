"""The 3D view's reduced mesh (``converter.preview``): what the page decodes is
the mesh, within half a quantization step, and it keeps to its byte bound."""

import numpy as np

from converter import preview as P
from tests.converter.test_mesh import icosphere


def test_the_preview_decodes_to_the_mesh_it_was_made_from():
    verts, faces = icosphere(radius=20.0, subdivisions=4, center=(-100.0, 30.0, 250.0))
    data = P.encode(verts, faces)
    assert data[:8] == P.MAGIC
    back, same = P.decode(data)
    np.testing.assert_array_equal(same, faces)
    step = (verts.max(axis=0) - verts.min(axis=0)) / P.LEVELS
    assert np.all(np.abs(back - verts) <= step / 2 + 1e-3 * step + 1e-5)


def test_a_preview_over_its_bound_is_decimated_until_it_fits():
    verts, faces = icosphere(radius=20.0, subdivisions=5)
    full = P.encode(verts, faces)
    bound = len(full) // 3
    data = P.preview(verts, faces, int(bound / P.MAX_RATIO))
    assert len(data) <= bound
    back, fewer = P.decode(data)
    assert 8 < len(fewer) < len(faces)
    assert np.abs(np.linalg.norm(back, axis=1) - 20.0).max() < 1.0  # still the sphere
