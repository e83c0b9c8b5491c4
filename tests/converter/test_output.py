"""The output stage on phantoms: formats by extension, several structures, the
print frame, the byte budget, and every bad input as one line with exit 2."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest
import trimesh

from converter import ConvertOptions, convert
from converter.errors import UsageError
from tests import dicomgen as G
from web.cli import run as ephemesh

#: two spheres: a dense one (1000 HU) at x = -12 mm, a soft one (200 HU) at x = +12 mm
DENSE, SOFT = G.sphere(center=(-12.0, 0.0, 0.0), radius=7.0), G.sphere(center=(12.0, 0.0, 0.0),
                                                                        radius=7.0)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-densities")
    geo = G.make_geometry("axial", size=(24, 24, 48), spacing=(1.0, 1.0))
    volume = np.maximum(G.render(DENSE, geo), G.render(SOFT, geo, fg=200))
    G.write_series(folder, volume, geometry=geo)
    return folder


def run_cli(capsys, *args):
    code = ephemesh(["convert", *map(str, args), "--no-progress", "--workers", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, pattern, *args):
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ephemesh: error: "), err
    assert re.search(pattern, lines[0], re.I), lines[0]


def test_two_structures_one_3mf_object_each(scan, tmp_path, capsys):
    out, report = tmp_path / "parts.3mf", tmp_path / "r.json"
    code, _, err = run_cli(capsys, scan, "-o", out, "--structure", "dense=600",
                           "--structure", "soft=-500:600", "--report", report)
    assert code == 0, err
    r = json.loads(report.read_text())
    assert r["file"] == {"format": "3mf", "zip": False, "extension": ".3mf",
                         "media_type": "model/3mf", "bytes": out.stat().st_size,
                         "header": "ephemesh SPACE=LPS UNITS=mm"}
    assert [p["name"] for p in r["parts"]] == ["dense", "soft"]
    assert r["watertight"] and r["manifold"]
    scene = trimesh.load(out)
    assert scene.units == "millimeter"
    dense, soft = scene.geometry["dense"], scene.geometry["soft"]
    assert dense.is_watertight and soft.is_watertight
    assert dense.centroid[0] < -8 and dense.volume > 0
    # the soft band holds the soft sphere and a thin shell around the dense one
    assert soft.bounds[1][0] > 17 and soft.volume > 0.9 * (4 / 3) * np.pi * 7**3
    assert r["parts"][0]["volume_mm3"] == pytest.approx(dense.volume, rel=1e-4)


def test_structures_as_stl_go_in_a_zip_and_as_ply_in_one_file(scan):
    opts = dict(structure="dense=600,soft=-500:600", workers=1)
    zipped = convert([scan], ConvertOptions(**opts, format="stl"))
    assert zipped.report["file"]["zip"] and zipped.report["file"]["extension"] == ".zip"
    with zipfile.ZipFile(io.BytesIO(zipped.stl)) as zf:
        assert zf.namelist() == ["dense.stl", "soft.stl"]
    ply = convert([scan], ConvertOptions(**opts, format="ply"))
    assert ply.report["file"]["extension"] == ".ply"
    assert ply.stl.startswith(b"ply\n") and b"comment part 1 soft" in ply.stl


def test_print_frame_rests_on_z0_centred_and_not_mirrored(scan):
    lps = convert([scan], ConvertOptions(threshold=G.MID_HU, workers=1))
    printed = convert([scan], ConvertOptions(threshold=G.MID_HU, frame="print", workers=1))
    lo, hi = printed.verts.min(axis=0), printed.verts.max(axis=0)
    assert lo[2] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose((lo[:2] + hi[:2]) / 2, 0.0, atol=1e-9)
    offset = np.array(printed.report["print_offset_mm"])
    # a translation of the LPS model: same faces, same volume (never mirrored)
    np.testing.assert_array_equal(printed.faces, lps.faces)
    np.testing.assert_allclose(printed.verts, lps.verts + offset, atol=2e-3)
    assert printed.report["volume_mm3"] == pytest.approx(lps.report["volume_mm3"], rel=1e-9)
    assert printed.report["volume_mm3"] > 0
    assert printed.report["frame"] == "PRINT"
    assert printed.stl[:80].rstrip() == b"ephemesh SPACE=PRINT UNITS=mm"
    assert printed.report["file"]["header"] == "ephemesh SPACE=PRINT UNITS=mm"


@pytest.mark.parametrize(("fmt", "budget"), [("stl", "20k"), ("3mf", "30000")])
def test_byte_budget_decimates_until_the_file_fits(scan, tmp_path, fmt, budget):
    out = tmp_path / f"m.{fmt}"
    result = convert([scan], ConvertOptions(threshold=G.MID_HU, max_bytes=budget, workers=1),
                     output=out)
    limit = {"20k": 20_000, "30000": 30_000}[budget]
    assert out.stat().st_size <= limit
    entry = result.report["budget"]
    assert entry["max_bytes"] == limit and entry["bytes_before"] > limit
    assert entry["action"].startswith("decimated from")
    assert result.report["file"]["bytes"] == out.stat().st_size
    assert result.report["watertight"]


def test_a_budget_in_the_print_frame_still_rests_on_z0(scan):
    result = convert([scan], ConvertOptions(threshold=G.MID_HU, max_bytes="15k", frame="print",
                                            workers=1))
    assert result.report["budget"]["action"].startswith("decimated")
    assert result.verts[:, 2].min() == pytest.approx(0.0, abs=1e-9)
    lo, hi = result.verts.min(axis=0), result.verts.max(axis=0)
    np.testing.assert_allclose((lo[:2] + hi[:2]) / 2, 0.0, atol=1e-9)
    assert len(result.stl) <= 15_000


def test_a_budget_that_fits_changes_nothing(scan):
    result = convert([scan], ConvertOptions(threshold=G.MID_HU, max_bytes="1G", workers=1))
    assert result.report["budget"]["action"] == "none: the file fits"


@pytest.mark.parametrize(("args", "pattern"), [
    (["--structure", "a=100:50"], r"structure a: the range 100:50 is empty"),
    (["--structure", "a=0:500", "--structure", "b=400"], r"ranges of a and b overlap"),
    (["--structure", "9lives=300"], r"name '9lives' is not allowed"),
    (["--structure", "bone"], r"NAME=LOW\[:HIGH\]"),
    (["--structure", "a=300", "--structure", "A=-100:0"], r"names repeat"),
    (["--structure", "bone=300", "--threshold", "100"], r"--threshold: not allowed with argument --structure"),
    (["--format", "step"], r"--format: invalid choice.*stl.*stl-ascii.*3mf.*obj.*ply"),
    (["--max-bytes", "12 parsecs"], r"max_bytes must be a number of bytes.*k, M"),
    (["--max-bytes", "100"], r"too small for any closed mesh"),
    (["--ascii", "--format", "3mf"], r"ascii writes STL"),
])
def test_bad_inputs_are_one_line_and_exit_2(scan, tmp_path, capsys, args, pattern):
    assert_refused(capsys, pattern, scan, "-o", tmp_path / "o.stl", *args)
    assert not (tmp_path / "o.stl").exists()


@pytest.mark.parametrize(("name", "args", "pattern"), [
    ("o.step", [], r"cannot tell the format from the extension \.step"),
    ("o.stl", ["--format", "3mf"], r"extension \.stl does not match format 3mf"),
    ("o.3mf", ["--format", "ply"], r"does not match format ply"),
    ("o.stl", ["--structure", "a=300", "--structure", "b=0:300"], r"name the output \.zip"),
    ("o.zip", ["--format", "3mf"], r"3mf is one file, not a zip"),
])
def test_bad_outputs_are_one_line_and_exit_2(scan, tmp_path, capsys, name, args, pattern):
    assert_refused(capsys, pattern, scan, "-o", tmp_path / name, *args)
    assert list(tmp_path.iterdir()) == []


def test_structure_outside_the_data_names_it(scan):
    with pytest.raises(Exception, match=r"structure bone \(5000 HU\) yields no surface") as e:
        convert([scan], ConvertOptions(structure="bone=5000", workers=1))
    assert e.value.code == "no_surface"


def test_codes_are_stable():
    for text, code in (("a=1:0", "invalid_structure"),):
        with pytest.raises(UsageError) as e:
            ConvertOptions(structure=text).validate()
        assert e.value.code == code
    with pytest.raises(UsageError) as e:
        ConvertOptions(max_bytes="x").validate()
    assert e.value.code == "invalid_max_bytes"


def test_canaries_reach_no_format_header_name_or_metadata(tmp_path):
    canary, uid_root = "ZQXCANARY", "1.2.826.0.1.3680043.8.498.424243"
    scan = tmp_path / "scan"
    files = G.write_phantom_series(
        scan, G.sphere(), G.make_geometry(size=(20, 32, 32)), patient_name=f"{canary}^PN",
        patient_id=f"{canary}-ID", series_description=f"{canary} desc",
        study_uid=uid_root + ".1", series_uid=uid_root + ".2", sop_uid_prefix=uid_root + ".3")
    for i, path in enumerate(files):
        path.rename(path.with_name(f"{canary}-file-{i}.dcm"))
    for fmt in ("3mf", "obj", "ply", "stl"):
        result = convert([scan], ConvertOptions(structure="dense=0,soft=-900:0", format=fmt,
                                                frame="print", workers=1))
        blob = result.stl + repr(result.report).encode()
        if result.report["file"]["zip"] or fmt == "3mf":  # the members' text too
            with zipfile.ZipFile(io.BytesIO(result.stl)) as zf:
                blob += b"".join(zf.read(n) for n in zf.namelist()) + repr(zf.namelist()).encode()
        for needle in (canary, canary.lower(), uid_root):
            assert needle.encode() not in blob, fmt


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_written_to_a_file_object_with_its_preview(scan, workers):
    """What a worker asks: the model streamed into a binary file it gives
    (the same bytes as returned), and the 3D view's preview made with it."""
    from converter.preview import decode, preview

    class Sink:  # a write-only file: no seek, no tell (a store writer's part)
        def __init__(self):
            self.chunks = []

        def write(self, data):
            self.chunks.append(bytes(data))
            return len(data)

    opts = ConvertOptions(threshold=G.MID_HU, workers=workers)
    sink = Sink()
    streamed = convert([scan], opts, output=sink, preview=True)
    held = convert([scan], opts)
    assert streamed.stl is None and held.preview is None
    assert b"".join(sink.chunks) == held.stl
    assert streamed.report["file"]["bytes"] == len(held.stl)
    assert streamed.preview == preview(held.verts, held.faces, 84 + 50 * len(held.faces))
    verts, faces = decode(streamed.preview)
    assert len(faces) == len(held.faces) and np.allclose(verts, held.verts, atol=0.01)
