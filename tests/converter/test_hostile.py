"""Hostile input: decoder bombs, 10⁶ declared frames, codestreams that abort
GDCM, an RLE decoder panic.  Each is refused with its code within seconds,
the process's memory stays bounded (measured with psutil in a subprocess),
nothing prints a traceback, and a decoder that crashes anyway ends the
series, not the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from converter import ConvertOptions, convert, list_series
from converter.errors import UnreadableInput
from tests import dicomgen as G
from tests import hostile as H

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: a conversion refusing a hostile series stays under this resident size (the
#: interpreter, numpy, pydicom and the decoders take ~150 MB; a bomb took 2–9 GB)
RSS_LIMIT_MB = 400


def _refused(inputs, code="corrupt_pixel_data", **options):
    with pytest.raises(UnreadableInput) as err:
        convert(inputs, ConvertOptions(**options))
    assert err.value.code == code, err.value.message
    assert "\n" not in err.value.message
    return err.value.message


def run_measured(args, timeout=60, env=None):
    """Run ``python args…`` and sample the resident size of it and its children
    every 5 ms: (completed process, peak RSS in MB of the tree, seconds)."""
    t = time.monotonic()
    proc = psutil.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, cwd=ROOT, env=env)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if time.monotonic() - t > timeout:
            proc.kill()
            raise AssertionError("the conversion did not end in time")
        time.sleep(0.005)
    out, err = proc.communicate()
    return (subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode()),
            peak / 2**20, time.monotonic() - t)


def _cli(folder, tmp_path, env=None):
    return run_measured(["-m", "web.cli", "convert", str(folder), "-o",
                         str(tmp_path / "out.stl")], env=env)


# --------------------------------------------------------------------------- decoder bombs


@pytest.mark.parametrize("kind", ["jpeg", "jpeg-ls", "jpeg2000"])
@pytest.mark.parametrize("factor", [2, 10, 100, 1000])
def test_decoder_bombs_are_refused_before_decoding(tmp_path, kind, factor):
    """The header says 64×64; the codestream declares 2× to 1000× that per side."""
    H.bomb(tmp_path, kind, factor)
    t = time.perf_counter()
    side = min(64 * factor, 65535)
    assert _refused([tmp_path]) == ("the pixel data disagree with the image header (a frame "
                                    f"declares {side}×{side} pixels, the header 64×64)")
    assert time.perf_counter() - t < 2


@pytest.mark.parametrize("kind", ["jpeg", "jpeg-ls", "jpeg2000"])
def test_a_1000x_bomb_is_refused_quickly_in_bounded_memory(tmp_path, kind):
    H.bomb(tmp_path / "s", kind, 1000)
    proc, rss_mb, seconds = _cli(tmp_path / "s", tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "declares 64000×64000 pixels" in proc.stderr
    assert rss_mb < RSS_LIMIT_MB, rss_mb
    assert seconds < 10


@pytest.mark.parametrize("kind", list(H.FRAMES))
def test_honest_encapsulated_series_still_convert(tmp_path, kind):
    H.write_kind(tmp_path, kind, n=4)
    preset = {"jpeg-ls": "auto"}.get(kind)
    threshold = None if preset else 0
    result = convert([tmp_path], ConvertOptions(threshold=threshold, preset=preset))
    assert result.report["watertight"] and result.report["triangles"] > 500


# --------------------------------------------------------------------------- frame counts


FRAME_CASES = {
    "functional groups": {},
    "native, no functional groups": {"functional_groups": False},
    "encapsulated, no functional groups": {"functional_groups": False, "encapsulated": True},
    "encapsulated with functional groups": {"encapsulated": True},
}


@pytest.mark.parametrize("case", FRAME_CASES)
def test_a_million_declared_frames_are_refused_at_once(tmp_path, case):
    path = H.many_frames(tmp_path / "mf" / "a.dcm", **FRAME_CASES[case])
    assert path.stat().st_size < 2600
    t = time.perf_counter()
    msg = _refused([path])
    assert time.perf_counter() - t < 1
    assert msg == ("1 of 1 files hold pixel data that cannot hold the frames their header "
                   "declares; nothing could be read")


def test_a_frame_count_the_pixel_data_hold_still_loads(tmp_path):
    path = H.many_frames(tmp_path / "a.dcm", frames=2, functional_groups=False)
    listing = list_series([path])  # two frames at one position: a single slice
    assert listing.series[0].slices == 1 and not listing.skipped


def test_a_lying_file_beside_a_good_series_is_skipped_with_a_warning(tmp_path):
    G.make_series_dir(tmp_path / "good", "sphere", size=(6, 24, 24))
    H.many_frames(tmp_path / "bad" / "a.dcm")
    result = convert([tmp_path], ConvertOptions(threshold=0))
    assert result.report["skipped"] == {"corrupt pixel data": 1}
    assert ("1 files whose pixel data cannot hold their frames were skipped"
            in result.report["warnings"])


# --------------------------------------------------------------------------- native crashes


_GDCM_ONLY = """if True:
    import sys, warnings, logging
    warnings.simplefilter("ignore"); logging.getLogger("pydicom").disabled = True
    import pydicom
    from pydicom.pixels import pixel_array
    pixel_array(pydicom.dcmread(sys.argv[1]), decoding_plugin="gdcm")
"""


def test_codestreams_that_abort_gdcm_are_refused(tmp_path):
    paths = H.gdcm_abort(tmp_path / "s")
    gdcm = subprocess.run([sys.executable, "-c", _GDCM_ONLY, str(paths[0])],
                          capture_output=True, timeout=60)
    assert gdcm.returncode == -6  # SIGABRT: an uncaught C++ exception in GDCM
    proc, rss_mb, seconds = _cli(tmp_path / "s", tmp_path)
    assert proc.returncode == 4 and proc.stderr.count("\n") == 1, proc.stderr
    assert "declares 64×64 pixels, the header 128×128" in proc.stderr
    assert rss_mb < RSS_LIMIT_MB and seconds < 10


_CRASHING_DECODER = """if True:
    import sys
    from converter import codestream, decoders, loading
    from pydicom.pixels import get_decoder
    # no header checks, and GDCM as the only JPEG-LS decoder: it aborts the process
    codestream.check_encapsulated = lambda *a, **k: None
    decoders.prefer_safe_decoders()
    dec = get_decoder("1.2.840.10008.1.2.4.80")
    for name in dec.available_plugins:
        dec.remove_plugin(name)
    dec.add_plugin("gdcm", ("pydicom.pixels.decoders.gdcm", "_decode_frame"))
    from web.cli import main
    main(sys.argv[1:])
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_decoder_that_aborts_ends_the_series_not_the_process(tmp_path, workers):
    """Past every check, GDCM aborts: the throwaway decoding process dies, the
    conversion says corrupt_pixel_data in one line and nothing GDCM printed
    reaches the caller's stderr."""
    H.gdcm_abort(tmp_path / "s")
    proc, rss_mb, _ = run_measured(["-c", _CRASHING_DECODER, "convert", str(tmp_path / "s"),
                                    "-o", str(tmp_path / "x.stl"), "--workers", str(workers)])
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr == ("ephemesh: error: a decoder crashed on the pixel data (corrupt or "
                           "hostile codestream)\n")
    assert rss_mb < RSS_LIMIT_MB


def test_an_rle_decoder_panic_is_refused_without_a_traceback(tmp_path):
    paths = H.rle_panic(tmp_path / "s")
    import pydicom
    from pydicom.pixels import pixel_array

    with pytest.raises(BaseException) as panic:
        pixel_array(pydicom.dcmread(paths[0]), decoding_plugin="pylibjpeg")
    assert type(panic.value).__name__ == "PanicException"
    assert not isinstance(panic.value, Exception)
    proc, rss_mb, seconds = _cli(tmp_path / "s", tmp_path,
                                 env=dict(os.environ, RUST_BACKTRACE="1"))
    assert proc.returncode == 4
    assert proc.stderr == ("ephemesh: error: the pixel data cannot be decoded (corrupt, "
                           "truncated or an unsupported variant)\n")
    assert rss_mb < RSS_LIMIT_MB and seconds < 10


# --------------------------------------------------------------------------- cost


def test_a_plain_series_forks_no_decoding_process(tmp_path):
    G.make_series_dir(tmp_path / "s", "sphere", size=(12, 24, 24))
    code = """if True:
        import json, os, sys
        import converter.sandbox as sb
        forks = []
        real = os.fork
        os.fork = lambda: forks.append(1) or real()
        from converter import ConvertOptions, convert
        convert([sys.argv[1]], ConvertOptions(threshold=0))
        print(json.dumps(len(forks)))
    """
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    assert json.loads(out) == 0
    H.write_kind(tmp_path / "c", "rle", n=4)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    assert json.loads(out) == 1  # a compressed series: one throwaway decoding process
