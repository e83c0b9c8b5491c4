"""The index → patient map: the compiled kernel against the numpy reference."""

import numpy as np
import pytest

from converter.volume import Volume
from tests.reference import volume_numpy as R


def tilted_volume(slices):
    """A tilted, unevenly spaced stack with an oblique in-plane frame."""
    rng = np.random.default_rng(slices)
    row_dir = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    col_dir = np.array([-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)])
    normal = np.cross(row_dir, col_dir)
    along = np.cumsum(rng.uniform(0.6, 1.8, slices))
    positions = along[:, None] * normal + np.arange(slices)[:, None] * [0.0, 0.4, 0.0]
    return Volume(np.zeros((slices, 4, 5), np.int16), positions, row_dir, col_dir, (0.7, 0.9))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_kernel_maps_like_the_reference_inside_and_beyond_the_slices(dtype):
    vol = tilted_volume(9)
    rng = np.random.default_rng(0)
    ijk = rng.uniform(-1.5, 10.5, size=(500, 3))  # past both ends: the pad layer
    ijk = ijk.astype(dtype)
    offset = np.array([-0.5, 3.0, 7.25])
    got = vol.index_to_patient(ijk, offset)
    np.testing.assert_allclose(got, R.index_to_patient(vol, ijk, offset), rtol=0, atol=1e-9)
    np.testing.assert_allclose(vol.index_to_patient(ijk), R.index_to_patient(vol, ijk),
                               rtol=0, atol=1e-9)
    # whole indices land on the slices' own positions
    whole = np.array([[k, 0, 0] for k in range(9)], dtype)
    np.testing.assert_allclose(vol.index_to_patient(whole), vol.positions, atol=1e-12)


def test_one_slice_extends_along_its_normal():
    vol = tilted_volume(1)
    ijk = np.array([[0.0, 0, 0], [1.0, 2, 3], [-1.0, 0, 1]])
    normal = np.cross(vol.row_dir, vol.col_dir)
    expected = (vol.positions[0] + ijk[:, :1] * normal + ijk[:, 1:2] * 0.7 * vol.col_dir
                + ijk[:, 2:] * 0.9 * vol.row_dir)
    np.testing.assert_allclose(vol.index_to_patient(ijk), expected, atol=1e-12)


def test_bad_shapes_are_refused():
    vol = tilted_volume(3)
    with pytest.raises(ValueError, match=r"ijk must have shape \(N, 3\)"):
        vol.index_to_patient(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="offset must have 3 values"):
        vol.index_to_patient(np.zeros((4, 3)), offset=[1.0, 2.0])
