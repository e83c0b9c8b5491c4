"""The output formats, read back by independent readers (trimesh, lib3mf, numpy-stl):
the same triangles, volume and units; names, colours and headers hold nothing else."""

from __future__ import annotations

import io
import zipfile

import lib3mf
import numpy as np
import pytest
import trimesh
from stl import mesh as stlmesh

from converter import formats, numtext
from converter.formats import Part
from tests.converter.test_mesh import icosphere


def sphere_part(name="model", radius=7.5, center=(1.0, -2.0, 3.0), subdivisions=3, k=0):
    v, f = icosphere(radius=radius, subdivisions=subdivisions, center=center)
    return Part(name, v, f, formats.PALETTE[k])


def two_parts():
    return [sphere_part("bone", center=(-20.0, 5.0, 130.0)),
            sphere_part("soft", radius=4.0, center=(15.0, -8.0, 127.5), subdivisions=2, k=1)]


def written(parts, fmt, frame="lps") -> bytes:
    buf = io.BytesIO()
    size = formats.write_model(parts, fmt, buf, frame)
    assert size == len(buf.getvalue())
    return buf.getvalue()


def volume(verts, faces) -> float:
    verts = np.asarray(verts, float)
    tri = (verts - verts.mean(axis=0))[np.asarray(faces)]  # near the origin: no cancellation
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)


def same_triangles(verts_a, faces_a, verts_b, faces_b, atol=1e-4):
    """The same set of triangles (corner order within a triangle kept, up to rotation)."""
    def canonical(v, f):
        tri = np.asarray(v, float)[np.asarray(f)]
        # rotate each triangle's corners so the smallest comes first (keeps the winding)
        first = np.argmin(np.round(tri[..., 0] * 1e3) * 1e9 + np.round(tri[..., 1] * 1e3) * 1e3
                          + np.round(tri[..., 2] * 1e3), axis=1)
        rolled = np.stack([np.roll(t, -s, axis=0) for t, s in zip(tri, first, strict=True)])
        order = np.lexsort(np.round(rolled.reshape(len(rolled), -1), 3).T[::-1])
        return rolled[order]

    a, b = canonical(verts_a, faces_a), canonical(verts_b, faces_b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=atol)


def read_lib3mf(data: bytes, tmp_path):
    path = tmp_path / "m.3mf"
    path.write_bytes(data)
    wrapper = lib3mf.get_wrapper()
    model = wrapper.CreateModel()
    reader = model.QueryReader("3mf")
    reader.ReadFromFile(str(path))
    assert reader.GetWarningCount() == 0
    objects = []
    it = model.GetMeshObjects()
    while it.MoveNext():
        obj = it.GetCurrentMeshObject()
        verts = np.array([list(v.Coordinates) for v in obj.GetVertices()])
        faces = np.array([list(t.Indices) for t in obj.GetTriangleIndices()])
        objects.append((obj.GetName(), verts, faces, obj.IsManifoldAndOriented()))
    return model, objects


@pytest.mark.parametrize("fmt", ["3mf", "obj", "ply", "stl", "stl-ascii"])
def test_one_part_reads_back_with_trimesh(fmt, tmp_path):
    part = sphere_part()
    data = written([part], fmt)
    if fmt == "obj":  # one file: a zip of the .obj and its .mtl
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.namelist() == ["model.obj", "model.mtl"]
            zf.extractall(tmp_path)
        path = tmp_path / "model.obj"
    else:
        path = tmp_path / f"m{formats.FORMATS[fmt].extension}"
        path.write_bytes(data)
    back = trimesh.load(path, force="mesh", process=False)
    assert len(back.faces) == len(part.faces)
    same_triangles(back.vertices, back.faces, part.verts, part.faces)
    assert back.volume == pytest.approx(volume(part.verts, part.faces), rel=1e-5)
    assert back.volume > 0  # outward


def test_3mf_reads_back_with_lib3mf_in_millimetres(tmp_path):
    parts = two_parts()
    model, objects = read_lib3mf(written(parts, "3mf"), tmp_path)
    assert model.GetUnit() == lib3mf.ModelUnit.MilliMeter
    assert [name for name, *_ in objects] == ["bone", "soft"]
    for part, (_, verts, faces, manifold) in zip(parts, objects, strict=True):
        assert manifold
        same_triangles(verts, faces, part.verts, part.faces)
        # lib3mf keeps float32 coordinates: 130 mm from the origin that is ~1e-5 mm
        assert volume(verts, faces) == pytest.approx(volume(part.verts, part.faces), rel=1e-4)
    # coloured parts: one base material each
    groups = model.GetBaseMaterialGroups()
    assert groups.MoveNext()
    group = groups.GetCurrentBaseMaterialGroup()
    assert group.GetCount() == 2
    colours = {group.GetName(i) for i in group.GetAllPropertyIDs()}
    assert colours == {"bone", "soft"}


def test_3mf_with_several_parts_in_trimesh_keeps_names_units_volumes(tmp_path):
    parts = two_parts()
    path = tmp_path / "m.3mf"
    path.write_bytes(written(parts, "3mf"))
    scene = trimesh.load(path)
    assert scene.units == "millimeter"
    assert sorted(scene.geometry) == ["bone", "soft"]
    for part in parts:
        # coordinates are written to 0.1 µm
        assert scene.geometry[part.name].volume == pytest.approx(volume(part.verts, part.faces),
                                                                 rel=1e-4)


def test_3mf_metadata_and_names_hold_nothing_else():
    data = written(two_parts(), "3mf", frame="print")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["[Content_Types].xml", "_rels/.rels", "3D/3dmodel.model"]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        text = zf.read("3D/3dmodel.model").decode()
    head = text[:text.index("<vertices>")]
    import re

    assert re.findall(r'<metadata name="(\w+)">([^<]*)<', head) == [
        ("Application", "ephemesh"), ("Description", "ephemesh SPACE=PRINT UNITS=mm")]
    assert re.findall(r'name="([^"]*)"', head) == ["Application", "Description", "bone", "soft",
                                                   "bone"]
    assert 'unit="millimeter"' in head


def test_obj_has_a_material_per_part_and_ply_colours(tmp_path):
    parts = two_parts()
    with zipfile.ZipFile(io.BytesIO(written(parts, "obj"))) as zf:
        obj_text, mtl = zf.read("model.obj").decode(), zf.read("model.mtl").decode()
        zf.extractall(tmp_path)
    assert obj_text.startswith("# ephemesh SPACE=LPS UNITS=mm\nmtllib model.mtl\n")
    assert "usemtl bone" in obj_text and "usemtl soft" in obj_text
    assert "newmtl bone" in mtl and "newmtl soft" in mtl
    scene = trimesh.load(tmp_path / "model.obj", group_material=True, split_object=True,
                         process=False)
    assert sorted(g.metadata.get("name", k) for k, g in scene.geometry.items()) == ["bone",
                                                                                     "soft"]
    total = sum(g.volume for g in scene.geometry.values())
    assert total == pytest.approx(sum(volume(p.verts, p.faces) for p in parts), rel=1e-5)
    ply = tmp_path / "m.ply"
    ply.write_bytes(written(parts, "ply"))
    back = trimesh.load(ply, process=False)
    assert len(back.faces) == sum(len(p.faces) for p in parts)
    colours = {tuple(c[:3]) for c in back.visual.vertex_colors}
    assert colours == {tuple(round(x * 255) for x in p.color) for p in parts}
    assert ply.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n"
                                       b"comment ephemesh SPACE=LPS UNITS=mm\n")


def test_several_stl_parts_go_in_a_zip_one_stl_each():
    parts = two_parts()
    with zipfile.ZipFile(io.BytesIO(written(parts, "stl"))) as zf:
        assert zf.namelist() == ["bone.stl", "soft.stl"]
        for part in parts:
            back = stlmesh.Mesh.from_file("x.stl", fh=io.BytesIO(zf.read(f"{part.name}.stl")))
            assert len(back.vectors) == len(part.faces)
            np.testing.assert_allclose(back.vectors, part.verts[part.faces], atol=1e-4)


def test_obj_path_writes_the_mtl_beside_it(tmp_path):
    size = formats.write_model(two_parts(), "obj", tmp_path / "skull.obj")
    assert (tmp_path / "skull.obj").stat().st_size == size
    assert (tmp_path / "skull.obj").read_text().splitlines()[1] == "mtllib skull.mtl"
    assert "newmtl soft" in (tmp_path / "skull.mtl").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skull.mtl", "skull.obj"]


def test_fixed_width_numbers_equal_python_formatting():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(scale=300, size=2000), [0.0, -0.0, -0.00004, 0.00005,
                                                               999.99996, -12.5, 1e-9]])
    digits = numtext.int_digits(np.abs(values).max() + 1)
    width = numtext.decimal_width(digits, 4)
    out = np.empty((len(values), width), np.uint8)
    numtext.fill_decimal(out, values, digits, 4)
    text = [bytes(row).decode() for row in out]
    np.testing.assert_allclose([float(t) for t in text], np.round(values, 4), atol=1e-9)
    assert {len(t) for t in text} == {width}
    ints = rng.integers(0, 10**6, size=1000)
    out = np.empty((len(ints), 6), np.uint8)
    numtext.fill_integer(out, ints, 6)
    assert [int(bytes(r)) for r in out] == ints.tolist()
    for bad in (1234.5, np.nan, np.inf):
        with pytest.raises(ValueError, match="integer digits"):
            numtext.fill_decimal(np.empty((1, 7), np.uint8), np.array([bad]), 3, 2)
    with pytest.raises(ValueError, match=r"integers must be in \[0"):
        numtext.fill_integer(np.empty((1, 2), np.uint8), np.array([5]), 2, offset=-6)
    with pytest.raises(ValueError, match="shape"):
        numtext.fill_integer(np.empty((2, 2), np.uint8), np.array([5]), 2)


def test_extensions_and_bad_extensions():
    assert formats.format_for_path("a/b.3MF") == "3mf"
    assert formats.format_for_path("b.zip") == "stl"
    assert formats.format_for_path("noext") is None
    with pytest.raises(ValueError, match=r"extension \.step.*\.stl"):
        formats.format_for_path("x.step")


def test_3mf_made_a_block_ahead_on_a_thread_is_the_same_file(monkeypatch):
    from converter import threemf

    monkeypatch.setattr(threemf, "BLOCK", 97)  # many blocks
    parts = two_parts()
    one, two = io.BytesIO(), io.BytesIO()
    formats.write_model(parts, "3mf", one, workers=1)
    formats.write_model(parts, "3mf", two, workers=2)
    assert one.getvalue() == two.getvalue()
