"""The quick header reader (converter.headers) answers only what pydicom would
answer: on pydicom's own test files, on every kind of series the generator
writes and on thousands of damaged files, each answer it gives is the one the
pydicom reading gives, and it hands everything else to pydicom."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from converter import headers as H
from converter import series as S
from converter.sources import Item
from tests import dicomgen as G
from tests.converter.test_robustness import mutate


def _same(fast, ref):
    """True when two header readings say the same."""
    if fast[0] != ref[0]:
        return False
    if fast[0] is not None:
        return True
    if fast[1] != ref[1] or len(fast[2]) != len(ref[2]):
        return False
    return all(a.frame == b.frame and a.native == b.native and a.spacing == b.spacing
               and a.slope == b.slope and a.intercept == b.intercept
               and np.array_equal(a.position, b.position)
               and np.array_equal(a.orientation, b.orientation)
               for a, b in zip(fast[2], ref[2], strict=True))


def _check(item):
    """The quick answer for ``item`` (None: deferred), checked against pydicom's."""
    fast = H.examine(item)
    if fast is not None:
        ref = S._examine_with_pydicom(item)
        assert _same(fast, ref), (fast, ref)
    return fast


def test_answers_on_pydicoms_test_files_are_pydicoms():
    answered = 0
    # pydicom's own files, found on disk (get_testdata_files would try to download more)
    files = sorted(p for p in Path(pydicom.data.__file__).parent.joinpath("test_files").rglob("*")
                   if p.is_file())
    for i, path in enumerate(files):
        answered += _check(Item(i, path=str(path))) is not None
    assert len(files) > 100
    assert answered > 80  # most of them are plain enough


def _one_file(tmp_path, **kw):
    vol = np.full((1, 8, 10), 40, np.int16)
    vol[0, 0] = -3000  # stored signed with the usual intercept
    return G.write_series(tmp_path, vol, **kw)[0]


ANSWERED = {
    "explicit": {},
    "implicit": {"transfer_syntax": ImplicitVRLittleEndian},
    "padding signed": {"pixel_padding_value": -2000},
    "padding implicit": {"pixel_padding_value": -2000, "transfer_syntax": ImplicitVRLittleEndian},
    "unsigned": {"rescale": (1.0, -3000.0), "pixel_padding_value": 0},
    "slope": {"rescale": (2.5, -1024.0)},
    "MR": {"modality": "MR", "rescale": (1.0, 0.0)},
    "private value": {"private_value": "anything"},
    "localizer": {"extra": {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}},
    "sequence": {"extra": {"ReferencedImageSequence": Sequence([Dataset(), Dataset()])}},
    "no geometry": {"extra": {"ImageOrientationPatient": None}},
    "compressed": {"transfer_syntax": RLELossless},  # header answered, pixels for pydicom
    "lower-case modality": {"modality": "ct"},
    "unknown modality": {"modality": "XYZ"},
    "899-character modality": {"modality": "CT" + "A" * 897},
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's, on the odd Modality values
@pytest.mark.parametrize("case", ANSWERED)
def test_plain_files_are_answered_as_pydicom_answers(tmp_path, case):
    kw = dict(ANSWERED[case])
    if case == "sequence":
        inner = kw["extra"]["ReferencedImageSequence"]
        inner[0].ReferencedSOPInstanceUID = "1.2.3"
        inner[1].ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    path = _one_file(tmp_path, **kw)
    fast = _check(Item(1, path=str(path)))
    assert fast is not None
    assert fast[0] == {"localizer": "localizer", "no geometry": "no geometry"}.get(case)
    if fast[0] is None:
        assert (fast[2][0].native is None) == (case == "compressed")


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's, on the overlong value
@pytest.mark.parametrize("written,read", [("CT", "CT"), ("ct", "CT"), (" MR ", "MR"),
                                          ("PT", "PT"), ("XYZ", "OT"), ("", "OT"),
                                          ("CT" + "A" * 897, "OT"), ("CT\\MR", "OT"),
                                          ("Knöchel", "OT")])
def test_modality_is_a_defined_term_in_both_readers(tmp_path, written, read):
    extra = {"SpecificCharacterSet": "ISO_IR 100"} if not written.isascii() else {}
    path = _one_file(tmp_path, modality=written, extra=extra)
    item = Item(1, path=str(path))
    fast = H.examine(item)
    ref = S._examine_with_pydicom(item)
    assert ref[1]["modality"] == read
    if fast is not None:
        assert fast[1]["modality"] == read
    from converter import list_series

    assert [s.modality for s in list_series([path]).series] == [read]


def test_a_sequence_of_undefined_length_is_stepped_over(tmp_path):
    path = _one_file(tmp_path, transfer_syntax=ImplicitVRLittleEndian, extra={
        "ReferencedImageSequence": Sequence([Dataset()])})
    import pydicom

    ds = pydicom.dcmread(path)
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    ds.ReferencedImageSequence[0].ReferencedFrameNumber = "1"
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    ds.save_as(path)
    assert b"\xff\xff\xff\xff" in path.read_bytes()
    assert _check(Item(1, path=str(path))) is not None


DEFERRED = {
    "bare dataset": {"preamble": False},
    "multi-valued description": {"series_description": "a\\b"},
    "Latin-1 description": {"series_description": "Knöchel",
                            "extra": {"SpecificCharacterSet": "ISO_IR 100"}},
    "frames": {"extra": {"NumberOfFrames": "2"}},
    "unusual number": {"extra": {"RescaleSlope": "1_0"}},
}


@pytest.mark.parametrize("case", DEFERRED)
def test_other_files_go_to_pydicom(tmp_path, case):
    kw = dict(DEFERRED[case])
    if case == "unusual number":
        path = _one_file(tmp_path, extra={"RescaleSlope": "1.5"})
        path.write_bytes(path.read_bytes().replace(b"1.5", b"1_5"))
    else:
        path = _one_file(tmp_path, **kw)
    assert H.examine(Item(1, path=str(path))) is None


def test_a_big_endian_file_goes_to_pydicom():
    path = get_testdata_file("MR_small_bigendian.dcm")
    assert H.examine(Item(1, path=path)) is None
    assert S._examine_with_pydicom(Item(1, path=path))[0] is None  # and pydicom reads it


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's, on the damaged values
def test_damaged_files_are_answered_as_pydicom_answers_or_deferred(tmp_path):
    folder = G.make_series_dir(tmp_path, "sphere", size=(6, 32, 32))
    files = [p.read_bytes() for p in sorted(folder.iterdir())]
    rng = random.Random(5)
    answered = 0
    for _ in range(1500):
        item = Item(1, data=mutate(files[rng.randrange(len(files))], rng))
        answered += _check(item) is not None
    assert 500 < answered < 1500  # both ways were taken


def test_a_plain_series_is_converted_without_importing_pydicom(tmp_path):
    """Stray files beside the series (a marker, notes, a thumbnail) are told
    apart from DICOM without pydicom too."""
    G.make_series_dir(tmp_path / "s", "sphere", size=(70, 24, 24))
    (tmp_path / "s" / "done").write_text("ok")
    (tmp_path / "s" / "notes.txt").write_text("x" * 300)
    (tmp_path / "s" / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    code = """if True:
        import json, sys
        from converter import ConvertOptions, convert
        r = convert([sys.argv[1]], ConvertOptions(threshold=0, workers=2))
        print(json.dumps([r.report["triangles"], "pydicom" in sys.modules,
                          r.report["skipped"]]))
    """
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], check=True,
                         capture_output=True, text=True).stdout
    triangles, imported, skipped = json.loads(out)
    assert triangles > 1000
    assert not imported
    assert skipped == {"not DICOM": 3}
