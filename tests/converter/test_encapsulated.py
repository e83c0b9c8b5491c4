"""The model as an Encapsulated STL instance (converter.encapsulated): valid
by dicom3tools' dciodvfy, the STL inside byte for byte (odd lengths padded),
the source's patient, study and frame of reference copied, new series and
instance UIDs, every source instance referenced, and the streaming parts
the same as the whole."""

from __future__ import annotations

import io

import pydicom
import pytest

from converter import ConvertOptions, convert, encapsulated
from tests import dicomgen as G
from tests.helpers import dciodvfy_errors


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = G.make_series_dir(tmp_path_factory.mktemp("enc"), "sphere", size=(16, 24, 24),
                               patient_name="CANARY^ENCAPSULATED", patient_id="CANARY-77")
    files = sorted(folder.iterdir())
    result = convert(files, ConvertOptions(threshold=0))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return result, sources


@pytest.mark.parametrize("known", [True, False], ids=["from-source", "anonymous"])
def test_the_instance_is_valid_encapsulated_stl_by_dciodvfy(converted, tmp_path, known):
    result, _ = converted
    source = encapsulated.source_of(result.stack) if known else encapsulated.Source.anonymous()
    assert dciodvfy_errors(tmp_path, encapsulated.encapsulate(result.stl, source)) == []


def test_the_instance_carries_the_model_and_the_source_identity(converted):
    result, sources = converted
    source = encapsulated.source_of(result.stack)
    ds = pydicom.dcmread(io.BytesIO(encapsulated.encapsulate(result.stl, source)))
    first = sources[0]
    assert ds.SOPClassUID == encapsulated.ENCAPSULATED_STL_STORAGE
    assert ds.Modality == "M3D" and ds.MIMETypeOfEncapsulatedDocument == "model/stl"
    assert encapsulated.payload(ds_bytes := encapsulated.encapsulate(result.stl, source)) \
        == result.stl, len(ds_bytes)
    assert str(ds.PatientName) == "CANARY^ENCAPSULATED" and ds.PatientID == "CANARY-77"
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID
    assert ds.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
    assert ds.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    assert ds.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert ds.Manufacturer == "ephemesh"
    referenced = {r.ReferencedSOPInstanceUID for r in ds.SourceInstanceSequence}
    assert referenced == {s.SOPInstanceUID for s in sources}
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID


def test_an_empty_model_is_refused(converted):
    with pytest.raises(ValueError, match="never empty"):
        encapsulated.parts(0, encapsulated.source_of(converted[0].stack))


@pytest.mark.parametrize("length", [1, 84, 85, 1001])
def test_any_length_round_trips_and_the_kept_header_rebuilds_the_same_file(converted, length):
    result, _ = converted
    source = encapsulated.source_of(result.stack)
    stl = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    whole = encapsulated.encapsulate(stl, source, now=_NOW)
    kept = encapsulated.header(len(stl), source, now=_NOW)
    rebuilt = encapsulated.around(stl, kept)
    assert len(whole) % 2 == 0
    assert encapsulated.payload(whole) == stl == encapsulated.payload(rebuilt)
    ds = pydicom.dcmread(io.BytesIO(rebuilt))
    assert ds.EncapsulatedDocumentLength == length


_NOW = __import__("datetime").datetime(2026, 12, 2, 1, 2, 3)
