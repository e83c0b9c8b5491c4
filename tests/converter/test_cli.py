"""The ``ephemesh`` console script: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from converter.sample import new_dataset
from tests import dicomgen as G

EPHEMESH = [sys.executable, "-c", "from web.cli import main; main()"]


def run(*args, cwd=None):
    return subprocess.run([*EPHEMESH, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(proc, code, pattern):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ephemesh: error: ")
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(pattern, lines[0], re.I), lines[0]


@pytest.fixture
def series(tmp_path):
    G.write_phantom_series(tmp_path / "scan", G.l_shape(), G.make_geometry(size=(30, 40, 40)))
    return tmp_path / "scan"


def non_image(path: Path, sop_class: str, modality: str):
    ds = new_dataset(sop_class)
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "ZQXCANARY^NONIMAGE"
    ds.save_as(path, enforce_file_format=True)


def test_convert_writes_stl_and_report(series, tmp_path):
    out, report = tmp_path / "o.stl", tmp_path / "r.json"
    proc = run("convert", series, "-o", out, "--threshold", G.MID_HU, "--report", report)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["triangles"] > 0 and data["watertight"]
    assert out.stat().st_size == 84 + 50 * data["triangles"]
    assert str(out) in proc.stdout and "watertight" in proc.stdout
    assert "%" not in proc.stderr  # no progress bar when stderr is not a terminal


def test_ascii_ras_report_to_stdout(series, tmp_path):
    out = tmp_path / "o.stl"
    proc = run("convert", series, "-o", out, "--threshold", 0, "--ascii", "--frame", "ras",
               "--report", "-", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["frame"] == "RAS"
    assert out.read_text().startswith("solid ephemesh_RAS")


def test_progress_bar_on_a_terminal(series, tmp_path):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([*EPHEMESH, "convert", str(series), "-o", str(tmp_path / "o.stl"),
                             "--threshold", "0"], stderr=secondary, stdout=subprocess.DEVNULL)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(120) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "%" in text and "reading" in text


def test_series_lists_every_series(tmp_path):
    G.write_phantom_series(tmp_path / "a", G.sphere(radius=8), G.make_geometry(size=(20, 32, 32)),
                           series_number=4, series_description="first")
    G.write_phantom_series(tmp_path / "b", G.box(), G.make_geometry("sagittal", size=(24, 36, 36)),
                           series_number=9, series_description="second")
    non_image(tmp_path / "sr.dcm", "1.2.840.10008.5.1.4.1.1.88.11", "SR")
    proc = run("series", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len([ln for ln in lines if "slices" in ln]) == 2
    assert any("#4" in ln and "20 slices" in ln and "axial" in ln for ln in lines)
    assert any("#9" in ln and "24 slices" in ln and "sagittal" in ln for ln in lines)
    assert lines[-1].startswith("skipped:") and "SR" in lines[-1]
    proc = run("series", tmp_path, "--json")
    assert len(json.loads(proc.stdout)["series"]) == 2


def test_sample_series_converts(tmp_path):
    assert run("sample", tmp_path / "s").returncode == 0
    proc = run("convert", tmp_path / "s", "-o", tmp_path / "s.stl", "--preset", "bone",
               "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["watertight"] and report["components"] >= 2
    timings = report["timings_s"]
    assert list(timings) == ["read", "surface", "mesh", "write", "total"]
    assert all(0 < timings[k] <= timings["total"] for k in ("read", "surface", "write"))


# ----------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    assert_one_line_error(run("convert", tmp_path / "nope", "-o", tmp_path / "o.stl"), 4,
                          "no such file or folder")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("convert", tmp_path / "empty", "-o", tmp_path / "o.stl"), 3,
                          "empty|no files")


def test_no_dicom_at_all(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hello " * 100)
    (tmp_path / "d" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300)
    assert_one_line_error(run("convert", tmp_path / "d", "-o", tmp_path / "o.stl"), 3,
                          "no DICOM")


def test_only_non_image_objects(tmp_path):
    (tmp_path / "d").mkdir()
    non_image(tmp_path / "d" / "sr", "1.2.840.10008.5.1.4.1.1.88.11", "SR")
    non_image(tmp_path / "d" / "rt", "1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT")
    non_image(tmp_path / "d" / "ko", "1.2.840.10008.5.1.4.1.1.88.59", "KO")
    proc = run("convert", tmp_path / "d", "-o", tmp_path / "o.stl")
    assert_one_line_error(proc, 3, "image")
    assert "ZQXCANARY" not in proc.stderr


def test_single_slice(series, tmp_path):
    (tmp_path / "one").mkdir()
    shutil.copy(sorted(series.iterdir())[5], tmp_path / "one" / "x.dcm")
    assert_one_line_error(run("convert", tmp_path / "one", "-o", tmp_path / "o.stl"), 3,
                          "single slice|one slice|only 1 slice")


@pytest.mark.parametrize("syntax,pattern", [
    ("1.2.840.10008.1.2.4.100", "MPEG2"),  # known to pydicom, no decoder for it
    ("1.2.840.10008.1.2.4.110", r"1\.2\.840\.10008\.1\.2\.4\.110"),  # JPEG XL: unknown to pydicom
])
def test_codec_missing(tmp_path, syntax, pattern):
    """A transfer syntax no installed decoder handles: exit 4 naming the syntax."""
    d = tmp_path / "codec"
    paths = G.write_phantom_series(d, G.sphere(), G.make_geometry(size=(4, 16, 16)))
    mpeg2 = "1.2.840.10008.1.2.4.100"
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = mpeg2
        ds.PixelData = encapsulate([b"\xff\x0a" + b"\0" * 64])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
        raw = path.read_bytes()
        assert raw.count(mpeg2.encode()) == 1 and len(syntax) == len(mpeg2)
        path.write_bytes(raw.replace(mpeg2.encode(), syntax.encode()))
    proc = run("convert", d, "-o", tmp_path / "o.stl")
    assert_one_line_error(proc, 4, "no decoder")
    assert_one_line_error(proc, 4, pattern)


def test_truncated_pixel_data(series, tmp_path):
    d = tmp_path / "trunc"
    shutil.copytree(series, d)
    victim = sorted(d.iterdir())[10]
    victim.write_bytes(victim.read_bytes()[:-1500])
    assert_one_line_error(run("convert", d, "-o", tmp_path / "o.stl"), 4,
                          "pixel data|truncated|corrupt")


def test_series_uid_not_there(series, tmp_path):
    proc = run("convert", series, "-o", tmp_path / "o.stl", "--series", "1.2.3.4.5.999")
    assert_one_line_error(proc, 3, "series.*not found|not found.*series")


def test_threshold_without_surface(series, tmp_path):
    proc = run("convert", series, "-o", tmp_path / "o.stl", "--threshold", "5000")
    assert_one_line_error(proc, 3, r"no surface.*-1000.*1000")
    assert not (tmp_path / "o.stl").exists()


@pytest.mark.parametrize("args,pattern", [
    (["--decimate", "1.5"], "decimate"),
    (["--smooth", "-2"], "smooth"),
    (["--step", "0"], "step"),
    (["--max-triangles", "2"], "max_triangles"),
])
def test_bad_option_values(series, tmp_path, args, pattern):
    assert_one_line_error(run("convert", series, "-o", tmp_path / "o.stl", *args), 2, pattern)


def test_usage_errors_exit_2(series, tmp_path):
    proc = run("convert", series, "-o", tmp_path / "o.stl", "--preset", "kidney")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run("convert", series, "--threshold", "1", "--preset", "bone", "-o", tmp_path / "o")
    assert proc.returncode == 2


def test_help_lists_the_exit_codes():
    proc = run("convert", "--help")
    assert proc.returncode == 0
    assert "5 out of memory" in " ".join(proc.stdout.split())


#: the CLI in a process that may grow by only EXTRA MiB once it has started
UNDER_A_LIMIT = """
import resource, sys
from web.cli import main
import converter.loading, converter.pipeline
size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]) * 2**20, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("extra_mib", "code"), [(16, 5), (1024, 0)])
def test_out_of_memory_is_one_line_and_exit_5(tmp_path, extra_mib, code):
    """A 26 MB volume cannot be loaded in 16 MiB more; in 1 GiB it converts."""
    folder = G.make_series_dir(tmp_path / "scan", "sphere", size=(200, 256, 256))
    proc = subprocess.run([sys.executable, "-c", UNDER_A_LIMIT, str(extra_mib), "convert",
                           str(folder), "-o", str(tmp_path / "o.stl"), "--workers", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    if code:
        assert_one_line_error(proc, code, r"^ephemesh: error: out of memory: the series needs "
                                          r"more memory than is free here$")
        assert not (tmp_path / "o.stl").exists()
    else:
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "o.stl").stat().st_size > 84
