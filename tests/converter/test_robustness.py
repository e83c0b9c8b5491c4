"""Damaged files: byte-level mutations of a valid series (bit flips,
truncation, zeroed runs, huge lengths) must end in a ``ConverterError`` with a
stable code — never another exception — and on the command line in one line
naming the problem, never a traceback or a value from the file."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from converter import ConverterError, ConvertOptions, convert
from converter.errors import UnreadableInput
from tests import dicomgen as G

CANARY = b"canary7q"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = G.make_series_dir(tmp_path_factory.mktemp("fuzz"), "sphere", size=(6, 32, 32))
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    op = rng.choice(["flip", "truncate", "zero", "length"])
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            j = rng.randrange(128, len(b))
            b[j] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        b = b[:rng.randrange(132, len(b))]
    elif op == "zero":
        j = rng.randrange(132, len(b))
        b[j:j + 16] = bytes(len(b[j:j + 16]))
    else:  # a length field or value swapped for a huge length
        j = rng.randrange(132, 700)
        b[j:j + 4] = b"\xff\xff\xff\x7f"
    return bytes(b)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_series_end_in_converter_errors(series, seed):
    rng = random.Random(seed)
    codes = set()
    for _ in range(60):
        files = list(series)
        k = rng.randrange(len(files))
        files[k] = mutate(files[k], rng)
        try:
            convert(files, ConvertOptions(workers=1, threshold=0))
        except ConverterError as exc:  # anything else fails the test
            codes.add(exc.code)
            assert exc.message and "\n" not in exc.message
    assert codes  # the mutations did break things


def _with_bad_value(series, tag_value: bytes, bad: bytes):
    out = []
    for data in series:
        assert tag_value in data
        out.append(data.replace(tag_value, bad))
    return out


def test_a_damaged_header_element_is_named_not_quoted(tmp_path):
    """A DS value that is not a number, in an element the converter needs."""
    folder = G.make_series_dir(tmp_path / "s", "sphere", size=(6, 16, 16),
                               extra={"RescaleSlope": "1.000001"})
    files = [p.read_bytes().replace(b"1.000001", CANARY) for p in sorted(folder.iterdir())]
    with pytest.raises(UnreadableInput) as err:
        convert(files, ConvertOptions(workers=1))
    assert err.value.code == "corrupt_header"
    assert err.value.message == ("6 of 6 files look like DICOM but hold damaged header "
                                 "elements; nothing could be read")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i, data in enumerate(files):
        (bad / f"{i}.dcm").write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", "from web.cli import main; main()", "convert",
                           str(bad), "-o", str(tmp_path / "x.stl")],
                          capture_output=True, timeout=120)
    assert proc.returncode == 4
    assert proc.stderr.decode().strip() == ("ephemesh: error: 6 of 6 files look like DICOM but "
                                            "hold damaged header elements; nothing could be read")
    assert CANARY not in proc.stderr + proc.stdout


def test_damaged_files_beside_good_ones_are_skipped_with_a_warning(tmp_path, series):
    files = list(series)
    extra = G.make_series_dir(tmp_path / "one", "sphere", size=(2, 32, 32),
                              extra={"RescaleSlope": "1.000001"})
    files += [p.read_bytes().replace(b"1.000001", CANARY) for p in sorted(extra.iterdir())]
    result = convert(files, ConvertOptions(workers=1, threshold=0))
    assert result.report["skipped"].get("damaged header") == 2
    assert "2 files with damaged header elements were skipped" in result.report["warnings"]
    assert CANARY.decode() not in repr(result.report)
