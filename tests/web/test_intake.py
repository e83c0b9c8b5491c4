"""web/intake.py on its own: limits counted on bytes read, names ignored."""

import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import FileStorage

from web.intake import Limits, kind_of, read_upload
from web.problems import Refused

NAMES = st.one_of(
    st.sampled_from(["../x.dcm", "../../etc/passwd", "/abs/x", "C:\\win\\x", "\\\\srv\\share\\x",
                     "a/../../b", "", ".", "dir/", "é/ü.dcm", "x" * 300]),
    st.text(min_size=1, max_size=40),
)


def storage(data: bytes) -> FileStorage:
    return FileStorage(stream=io.BytesIO(data), filename="Patient^Name.zip")


@pytest.mark.filterwarnings("ignore:Duplicate name")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(st.tuples(NAMES, st.booleans(), st.binary(max_size=64)), max_size=12))
def test_any_zip_gives_member_bytes_or_a_refusal(series_files, entries):
    buf = io.BytesIO()
    expected = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (name, is_dicom, junk) in enumerate(entries):
            data = series_files[i % len(series_files)] if is_dicom else b"junk" + junk
            info = zipfile.ZipInfo(name or f"unnamed{i}")
            if not info.filename:  # zipfile cuts a name at NUL: "\0x" is no name at all
                info = zipfile.ZipInfo(f"unnamed{i}")
            if info.is_dir():
                zf.writestr(info, b"")
                continue
            zf.writestr(info, data)
            if is_dicom:
                expected.append(data)
    try:
        upload = read_upload([storage(buf.getvalue())], Limits(max_files=50))
    except Refused as exc:
        assert exc.code in ("not_dicom", "no_files", "bad_archive", "zip_ratio")
        assert not expected or exc.code != "not_dicom"
        return
    assert sorted(upload.files) == sorted(expected)


def test_limits_count_bytes_read_not_declared_sizes(series_files):
    # a member whose header lies about its size: zipfile reads what is there
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("a", "w") as fh:
        fh.write(b"\0" * (20 << 20))
    data = bytearray(buf.getvalue())
    try:
        read_upload([storage(bytes(data))], Limits(max_unpacked=10 << 20, max_ratio=10**6))
    except Refused as exc:
        assert exc.code == "zip_too_large"
    else:
        raise AssertionError("20 MB unpacked passed a 10 MB cap")


def test_kind_of_sniffs_dicom_dicomdir_and_other(series_files):
    assert kind_of(series_files[0]) == "dicom"
    assert kind_of(series_files[0][128 + 4:]) in ("dicom", "other")  # bare meta group
    assert kind_of(b"hello world, this is text") == "other"
    assert kind_of(b"") == "other"


def test_an_upload_with_no_files_is_refused():
    try:
        read_upload([storage(b"")], Limits())
    except Refused as exc:
        assert exc.code == "no_files"
    else:
        raise AssertionError("empty upload accepted")
