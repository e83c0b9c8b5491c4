"""A real slicer consumes the models: Debian's PrusaSlicer (installed by
``scripts/setup.sh --test``) loads the STL and the 3MF, reports no repair,
and exports G-code."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from converter import ConvertOptions, convert, formats
from tests import dicomgen as G
from tests.converter.test_mesh import icosphere

SLICER = shutil.which("prusa-slicer")
#: what PrusaSlicer's --info prints only when it had to repair the mesh
REPAIRS = ("open_edges", "degenerate_facets", "edges_fixed", "facets_removed",
           "facets_reversed", "backwards_edges")



def slicer(*args, timeout=180) -> str:
    assert SLICER, "prusa-slicer is missing: scripts/setup.sh --test installs it"
    proc = subprocess.run([SLICER, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                     if "[trace]" not in line)


def info(path) -> list[dict]:
    """``--info``'s sections, one per object: key → value."""
    sections = []
    for line in slicer("--info", path).splitlines():
        if line.startswith("[") and line.endswith("]"):
            sections.append({})
        elif " = " in line and sections:
            key, _, value = line.partition(" = ")
            sections[-1][key.strip()] = value.strip()
    return sections


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The L-shaped phantom in the print frame as STL, and two structures as 3MF."""
    folder = tmp_path_factory.mktemp("slicer")
    scan = folder / "scan"
    geo = G.make_geometry("axial", size=(30, 40, 40))
    volume = np.maximum(G.render(G.l_shape(), geo),
                        G.render(G.sphere(center=(0.0, 10.0, 0.0), radius=5.0), geo, fg=200))
    G.write_series(scan, volume, geometry=geo)
    out = {}
    for name, opts in (("one.stl", dict(threshold=G.MID_HU, smooth=10)),
                       ("two.3mf", dict(structure="dense=600,soft=-500:600"))):
        convert([scan], ConvertOptions(frame="print", workers=1, **opts), output=folder / name)
        out[name] = folder / name
    return out


@pytest.mark.parametrize("name", ["one.stl", "two.3mf"])
def test_prusa_slicer_loads_without_repairs_and_exports_gcode(models, name, tmp_path):
    sections = info(models[name])
    assert len(sections) == (1 if name.endswith(".stl") else 2)
    for section in sections:
        assert section["manifold"] == "yes"
        assert not set(REPAIRS) & set(section), section
        assert float(section["volume"]) > 0
    if name.endswith(".3mf"):  # positions kept: the print frame rests on z = 0
        assert min(float(s["min_z"]) for s in sections) == pytest.approx(0.0, abs=1e-3)
    gcode = tmp_path / "out.gcode"
    log = slicer("--export-gcode", "--output", gcode, models[name])
    assert "exported" in log
    text = gcode.read_text()
    layers = len(re.findall(r"^;LAYER_CHANGE", text, re.M))
    assert layers > 20 and len(re.findall(r"^G1 ", text, re.M)) > 1000


def test_the_repair_check_can_fail(tmp_path):
    """One triangle turned over: PrusaSlicer says it reversed it."""
    v, f = icosphere(radius=10, subdivisions=2, center=(0, 0, 10))
    f = f.copy()
    f[3] = f[3][[0, 2, 1]]
    formats.write_model([formats.Part("model", v, f)], "stl", tmp_path / "bad.stl")
    (section,) = info(tmp_path / "bad.stl")
    assert "facets_reversed" in section
