"""STL files read back with numpy-stl; the header names the frame and nothing else."""

import io

import numpy as np
import pytest
from stl import mesh as stlmesh

from converter import stl
from tests.converter.test_mesh import icosphere
from tests.reference import mesh_numpy as R


def to_bytes(verts, faces, *, frame="LPS", ascii=False) -> bytes:
    buf = io.BytesIO()
    (stl.write_ascii if ascii else stl.write_binary)(verts, faces, buf, frame)
    return buf.getvalue()


def binary_records(verts, faces) -> np.ndarray:
    """The records of a binary STL written to memory."""
    return np.frombuffer(to_bytes(verts, faces)[84:], stl.STL_DTYPE)


@pytest.mark.parametrize("ascii_", [False, True])
def test_round_trip_through_numpy_stl(tmp_path, ascii_):
    v, f = icosphere(radius=7.5, subdivisions=2, center=(1, -2, 3))
    path = tmp_path / "s.stl"
    writer = stl.write_ascii if ascii_ else stl.write_binary
    size = writer(v, f, path, "LPS")
    assert path.stat().st_size == size
    back = stlmesh.Mesh.from_file(str(path))
    assert len(back.vectors) == len(f)
    np.testing.assert_allclose(back.vectors, v[f], atol=1e-4 if ascii_ else 1e-5)
    volume, _, _ = back.get_mass_properties()
    assert volume > 0  # outward normals
    # stored normals agree with the winding
    calc = np.cross(back.vectors[:, 1] - back.vectors[:, 0], back.vectors[:, 2] - back.vectors[:, 0])
    calc /= np.linalg.norm(calc, axis=1, keepdims=True)
    np.testing.assert_allclose(back.normals / np.linalg.norm(back.normals, axis=1, keepdims=True),
                               calc, atol=1e-3)


def test_binary_header_is_fixed_per_frame():
    v, f = icosphere(subdivisions=0)
    for frame in ("LPS", "RAS"):
        data = to_bytes(v, f, frame=frame)
        assert data[:80] == f"ephemesh SPACE={frame} UNITS=mm".encode().ljust(80, b" ")
        assert not data.startswith(b"solid")  # would confuse readers into ASCII mode
        assert int.from_bytes(data[80:84], "little") == len(f)
        assert len(data) == 84 + 50 * len(f)


def test_ascii_names_the_frame():
    v, f = icosphere(subdivisions=0)
    text = to_bytes(v, f, frame="RAS", ascii=True).decode()
    assert text.startswith("solid ephemesh_RAS\n") and text.endswith("endsolid ephemesh_RAS\n")


def test_write_to_file_object_and_bad_frame():
    v, f = icosphere(subdivisions=1)
    buf = io.BytesIO()
    n = stl.write_binary(v, f, buf)
    assert n == len(buf.getvalue())
    with pytest.raises(ValueError, match="frame must be one of"):
        stl.write_binary(v, f, io.BytesIO(), "XYZ")


def test_failed_write_leaves_no_partial_file(tmp_path):
    v, f = icosphere(subdivisions=1)
    bad = np.array([[0, 1, 10**6]])  # index error while building records
    target = tmp_path / "out.stl"
    with pytest.raises(IndexError):
        stl.write_binary(v, bad, target)
    assert list(tmp_path.iterdir()) == []


def test_records_in_blocks_match_one_numpy_block(monkeypatch):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(500, 3)) * 100
    f = rng.integers(0, 500, size=(1234, 3))
    f[0] = [3, 3, 4]  # a degenerate triangle gets a zero normal
    whole = binary_records(v, f)
    monkeypatch.setattr(stl, "BLOCK", 100)
    blocks = binary_records(v, f)
    np.testing.assert_array_equal(whole, blocks)
    corners = np.empty((len(f), 12), np.float32)
    R.corners_and_normals(v.astype(np.float32), f, corners)
    np.testing.assert_array_equal(whole["vertices"].reshape(-1, 9), corners[:, 3:])
    np.testing.assert_allclose(whole["normal"], corners[:, :3], atol=2e-6)
    assert not whole["normal"][0].any() and not whole["attr"].any()
    # the compiled records are numpy's (normals to rounding)
    reference = np.empty(len(f), stl.STL_DTYPE)
    R.stl_records(v.astype(np.float32), f, reference)
    np.testing.assert_array_equal(whole["vertices"], reference["vertices"])
    np.testing.assert_allclose(whole["normal"], reference["normal"], atol=2e-6)
    assert not reference["attr"].any()
