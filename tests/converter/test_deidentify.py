"""``ephemesh deidentify`` on files nobody here wrote (pydicom's and
pydicom-data's) and on generated series: no attribute of the profile is
left, the pixel data and the geometry are byte for byte the same, UIDs are
new and consistent within a run, and the converter makes the very same mesh
from the de-identified files as from the originals."""

from __future__ import annotations

import io
import os
import re
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from converter import ConvertOptions, convert
from converter.deidentify import Deidentifier, profile
from converter.exits import Exit
from tests import dicomgen as G
from tests import hostile as H
from web.cli import run as ephemesh

pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom's notes on the odd test files

NEW_UID = re.compile(r"^2\.25\.\d{1,39}$")
#: the geometry and the image description the converter reads: never touched
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
            "RescaleSlope", "RescaleIntercept", "RescaleType", "Rows", "Columns",
            "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
            "PhotometricInterpretation", "NumberOfFrames", "Modality", "SeriesNumber",
            "ImageType", "SpacingBetweenSlices")
FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _read(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, force=True)


def _all_files():
    files = sorted(f for f in get_testdata_files("*") if os.path.isfile(f))
    assert len(files) > 100, "pydicom-data must be installed by the test set-up"
    return files


def _uids(ds, found=None):
    """Every UID value of an element the profile replaces (U), nested ones too."""
    found = set() if found is None else found
    table = profile()
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _uids(item, found)
        elif elem.VR == "UI" and table.action(elem.tag) in ("U", "D"):
            values = [elem.value] if isinstance(elem.value, str) else list(elem.value or [])
            found.update(str(v) for v in values if v)
    return found


def _profile_problems(ds, original_uids, where="") -> list[str]:
    """What of the profile is left in ``ds`` (a list of readable problems)."""
    table = profile()
    problems = []
    for elem in ds:
        name = f"{where}{elem.tag}"
        if elem.tag.is_private:
            problems.append(f"{name}: a private element is left")
            continue
        action = table.action(elem.tag)
        if elem.VR == "SQ":
            if action in ("Z", "D") and len(elem.value):
                problems.append(f"{name}: a sequence the profile empties has items")
            for n, item in enumerate(elem.value):
                problems += _profile_problems(item, original_uids, f"{name}[{n}].")
            continue
        if action == "X":
            problems.append(f"{name}: the profile removes it")
        elif action == "Z" and not elem.is_empty:
            problems.append(f"{name}: the profile empties it")
        elif action == "D" and not elem.is_empty and elem.VR != "UI" \
                and str(elem.value) != table.dummy.get(elem.VR):
            problems.append(f"{name}: the profile replaces it with a dummy")
        elif action == "U" or (action == "D" and elem.VR == "UI"):
            values = [elem.value] if isinstance(elem.value, str) else list(elem.value or [])
            for value in filter(None, values):  # an empty UID stays empty
                if str(value) in original_uids or not NEW_UID.match(str(value)):
                    problems.append(f"{name}: the UID was not replaced")
    return problems


def _raw(ds, keyword):
    """The element's bytes as stored (never converted), or None."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if tag not in ds:
        return None
    item = ds.get_item(tag)
    return getattr(item, "value", None) if not hasattr(item, "VR") or item.VR != "SQ" else None


def _geometry(ds) -> dict:
    """Pixel data, the geometry and the transfer syntax, as raw bytes, nested
    functional groups included."""
    out = {k: _raw(ds, k) for k in GEOMETRY + ("PixelData", "FloatPixelData")}
    out["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID", ""))
    for group in FUNCTIONAL_GROUPS:
        if group in ds:
            for n, item in enumerate(ds[group].value):
                for seq in item:
                    if seq.VR != "SQ":
                        continue
                    for sub in seq.value:
                        for k in GEOMETRY:
                            value = _raw(sub, k)
                            if value is not None:
                                out[f"{group}[{n}].{seq.keyword}.{k}"] = value
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize("path", _all_files(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_every_file_of_pydicom_and_pydicom_data(path, tmp_path):
    """Through the command: what it writes holds nothing of the profile and
    the same pixel data and geometry bytes; what it cannot read it skips."""
    try:
        original = _read(path)
        readable = len(list(original.keys())) > 0
    except Exception:  # not DICOM at all (README, JSON, a gzip…)
        readable = False
    code = ephemesh(["deidentify", path, str(tmp_path / "out")])
    written = sorted((tmp_path / "out").glob("*.dcm")) if (tmp_path / "out").exists() else []
    if not written:
        assert code == Exit.UNREADABLE
        is_dicomdir = readable and (str(original.file_meta.get("MediaStorageSOPClassUID", ""))
                                    == "1.2.840.10008.1.3.10")
        assert not readable or is_dicomdir or not _geometry(original).get("PixelData") \
            or path.endswith("no_meta.dcm"), "an image was skipped"
        return
    assert code == Exit.DONE and len(written) == 1
    out = _read(written[0].read_bytes())
    assert _geometry(out) == _geometry(original)
    assert _profile_problems(out, _uids(original)) == []
    assert _profile_problems(out.file_meta, _uids(original.file_meta)) == []
    assert out.PatientIdentityRemoved == "YES"
    assert out.get("PatientName", "") in ("", None)
    if "SOPInstanceUID" in original and "MediaStorageSOPInstanceUID" in original.file_meta:
        same = original.SOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
        assert (out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID) == same


def _series_dir(root, syntax):
    """A small CT series in ``syntax`` carrying a canary in every identifying place."""
    if syntax in ("jpeg2000", "rle"):
        paths = H.write_kind(root, syntax, n=6, **CANARY_HEADER)
        return paths[0].parent
    G.make_series_dir(root, "l_shape", size=(14, 30, 30), transfer_syntax=syntax,
                      patient_name=CANARY + "^PN", patient_id=CANARY + "ID",
                      series_description=CANARY + "SD", private_value=CANARY + "PV",
                      extra=CANARY_HEADER)
    return root


CANARY = "ZQXDEID7"
CANARY_HEADER = {"PatientName": CANARY + "^PN", "PatientID": CANARY + "ID",
                 "AccessionNumber": CANARY + "AN", "InstitutionName": CANARY + "IN",
                 "StudyDescription": CANARY + "ST", "ReferringPhysicianName": CANARY + "^RP",
                 "PatientBirthDate": "19561107", "StudyDate": "20240229",
                 "StudyTime": "101112", "StudyID": CANARY + "SI", "OperatorsName": CANARY}


@pytest.mark.parametrize("syntax", [G.ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
                                    "rle", "jpeg2000"])
def test_the_mesh_from_de_identified_files_is_the_same(tmp_path, syntax):
    series = _series_dir(tmp_path / "in", syntax)
    assert ephemesh(["deidentify", str(series), str(tmp_path / "out")]) == Exit.DONE
    out = sorted((tmp_path / "out").iterdir())
    assert len(out) == len(list(series.iterdir()))
    for path in out:
        data = path.read_bytes()
        assert CANARY.encode() not in data and b"19561107" not in data
        ds = _read(data)
        assert ds.file_meta.TransferSyntaxUID == (
            {"rle": H.RLELossless, "jpeg2000": H.JPEG2000Lossless}.get(syntax, syntax))
    # one new series UID for the whole run, none of the originals
    originals = [_read(p.read_bytes()) for p in sorted(series.iterdir())]
    copies = [_read(p.read_bytes()) for p in out]
    assert len({c.SeriesInstanceUID for c in copies}) == 1
    assert {c.SeriesInstanceUID for c in copies}.isdisjoint(o.SeriesInstanceUID for o in originals)
    assert len({c.SOPInstanceUID for c in copies}) == len(copies)
    options = ConvertOptions(threshold=G.MID_HU if syntax not in ("rle", "jpeg2000") else 0,
                             workers=1)
    a, b = convert([series], options), convert([tmp_path / "out"], options)
    assert a.verts.shape[0] > 100
    np.testing.assert_array_equal(a.verts, b.verts)
    np.testing.assert_array_equal(a.faces, b.faces)
    assert a.stl == b.stl


def test_an_enhanced_ct_of_pydicom_data_meshes_the_same(tmp_path):
    """eCT_Supplemental: two frames, geometry in functional groups, dates in them too."""
    source = get_testdata_file("eCT_Supplemental.dcm")
    assert ephemesh(["deidentify", source, str(tmp_path / "out")]) == Exit.DONE
    options = ConvertOptions(threshold=-300, workers=1)
    a, b = convert([source], options), convert([tmp_path / "out"], options)
    np.testing.assert_array_equal(a.verts, b.verts)
    np.testing.assert_array_equal(a.faces, b.faces)
    assert _geometry(_read(next((tmp_path / "out").iterdir()).read_bytes())) \
        == _geometry(_read(source))


def test_uids_are_consistent_within_a_run_and_new_in_each(tmp_path):
    series = _series_dir(tmp_path / "in", G.ExplicitVRLittleEndian)
    one, two = Deidentifier(), Deidentifier()
    paths = sorted(series.iterdir())
    first = [_read(one.file(p)) for p in paths]
    again = _read(one.file(paths[0]))
    other = _read(two.file(paths[0]))
    assert again.SOPInstanceUID == first[0].SOPInstanceUID
    assert other.SOPInstanceUID != first[0].SOPInstanceUID
    assert {d.FrameOfReferenceUID for d in first} == {first[0].FrameOfReferenceUID}
    assert first[0].StudyInstanceUID != first[0].SeriesInstanceUID


def test_zips_and_folders_in_one_folder_out(tmp_path):
    series = _series_dir(tmp_path / "in", G.ExplicitVRLittleEndian)
    from tests.helpers import zip_bytes

    (tmp_path / "scan.zip").write_bytes(zip_bytes(
        {f"{CANARY}/{p.name}": p.read_bytes() for p in sorted(series.iterdir())}))
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "in" / "DICOMDIR")
    (tmp_path / "in" / "notes.txt").write_text(CANARY)
    code = ephemesh(["deidentify", str(tmp_path / "scan.zip"), str(tmp_path / "in"),
                     str(tmp_path / "out")])
    assert code == Exit.DONE
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"{n:06d}.dcm" for n in range(1, 2 * 14 + 1)]
    for path in (tmp_path / "out").iterdir():
        assert CANARY.encode() not in path.read_bytes()


def test_bad_arguments_are_one_line(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "text.txt").write_text("not DICOM")
    assert ephemesh(["deidentify", str(tmp_path / "missing"), str(tmp_path / "o")]) \
        == Exit.UNREADABLE
    assert ephemesh(["deidentify", str(tmp_path / "text.txt"), str(tmp_path / "full")]) \
        == Exit.USAGE
    assert ephemesh(["deidentify", str(tmp_path / "text.txt"), str(tmp_path / "o2")]) \
        == Exit.UNREADABLE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("ephemesh: error: ") for line in lines)
    assert "no DICOM file" in lines[2]
