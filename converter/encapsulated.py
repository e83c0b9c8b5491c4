"""The model as a DICOM Encapsulated STL instance (PS3.3 A.85), so a PACS can
file it next to the scan it was made from.

``source_of(stack)`` reads, from the converted series' own files, what the
new instance must share with them: the patient and study identifiers, the
frame of reference and the references to the source instances.  That value
is for building the instance only: callers keep it no longer than the upload
it came from and never write it anywhere else.

``encapsulate(stl, source)`` returns the instance as a Part-10 file.  For a
large model ``parts(stl_length, source)`` gives the bytes that go before and
after the STL, so the instance can be streamed without a copy of the model
(``prefix + stl [+ pad] + suffix``).

The instance is new: new Study-level nothing (the study is the source's),
a new series and instance UID, modality M3D, MIME type ``model/stl``,
millimetres as the measurement unit (UCUM ``mm``), ephemesh as the
manufacturer and software.
"""

from __future__ import annotations

import datetime as _dt
import io
import struct
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .errors import UnreadableInput

ENCAPSULATED_STL_STORAGE = "1.2.840.10008.5.1.4.1.1.104.3"
MIME_TYPE = "model/stl"
MANUFACTURER = "ephemesh"
MODEL_NAME = "ephemesh DICOM-to-STL"
SOFTWARE = "ephemesh 0.1.0"

#: copied from the source into the new instance (and nowhere else)
IDENTITY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "IssuerOfPatientID",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "StudyDescription", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "SpecificCharacterSet",
)
_REFERENCE = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")
_ENCAPSULATED_DOCUMENT = 0x00420011


@dataclass
class Source:
    """What the returned instance shares with the series it was made from."""

    identity: Dataset
    references: list = field(default_factory=list)  # (SOP class UID, SOP instance UID)
    series_uid: str = ""  # the source series (Common Instance Reference)

    @classmethod
    def anonymous(cls) -> Source:
        """No source: a new study and frame of reference, no patient, no
        references (for a model whose source's identity was not kept)."""
        return cls(Dataset())


def source_of(stack) -> Source:
    """The identity and references of a converted series.

    Parameters
    ----------
    stack : converter.volume.Stack
        The series the model was made from (its slices' items are read again,
        header only).

    Returns
    -------
    Source
    """
    identity, references, seen, series_uid = None, [], set(), ""
    for sl in stack.slices:
        item = sl.item
        if item.index in seen:
            continue
        seen.add(item.index)
        try:
            ds = dcmread(item.source(), stop_before_pixels=True,
                         specific_tags=list(IDENTITY + _REFERENCE))
        except Exception:
            raise UnreadableInput("a file of the series cannot be read again") from None
        if identity is None:
            identity = Dataset()
            for name in IDENTITY:
                if name in ds:
                    identity[name] = ds[name]
        if "SOPInstanceUID" in ds:
            references.append((str(ds.get("SOPClassUID", "")), str(ds.SOPInstanceUID)))
        series_uid = series_uid or str(ds.get("SeriesInstanceUID", ""))
    return Source(identity if identity is not None else Dataset(), references, series_uid)


def _code(value, scheme, meaning) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _dataset(stl_length: int, source: Source, now: _dt.datetime) -> Dataset:
    ds = Dataset()
    for element in source.identity:
        ds[element.tag] = element
    for name in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                 "PositionReferenceIndicator"):
        if name not in ds:
            setattr(ds, name, "")  # type 2: present, empty when unknown
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = generate_uid()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID = ENCAPSULATED_STL_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.Modality = "M3D"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9901
    ds.SeriesDescription = "ephemesh surface model"
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = SOFTWARE
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "YES"
    ds.DocumentTitle = "Surface model (STL)"
    ds.ConceptNameCodeSequence = Sequence()
    ds.MIMETypeOfEncapsulatedDocument = MIME_TYPE
    ds.EncapsulatedDocumentLength = int(stl_length)
    ds.MeasurementUnitsCodeSequence = Sequence([_code("mm", "UCUM", "mm")])
    if source.references:
        ds.SourceInstanceSequence = Sequence(_references(source))
        if source.series_uid:  # Common Instance Reference: where the sources are
            series = Dataset()
            series.SeriesInstanceUID = source.series_uid
            series.ReferencedInstanceSequence = Sequence(_references(source))
            ds.ReferencedSeriesSequence = Sequence([series])
    return ds


def _references(source: Source) -> list:
    refs = []
    for sop_class, sop_instance in source.references:
        r = Dataset()
        r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = sop_class, sop_instance
        refs.append(r)
    return refs


def _file_bytes(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _element_header(length: int) -> bytes:
    # explicit VR little endian: group, element, "OB", reserved, 32-bit length
    return struct.pack("<HH2sHI", 0x0042, 0x0011, b"OB", 0, length)


def parts(stl_length: int, source: Source, *, now=None) -> tuple[bytes, bytes]:
    """The instance around an STL of ``stl_length`` bytes: ``(prefix, suffix)``.

    The file is ``prefix + stl + pad + suffix`` where ``pad`` is one zero byte
    when ``stl_length`` is odd (DICOM values have even lengths).
    """
    if stl_length < 1:
        raise ValueError("an Encapsulated Document is never empty: stl_length must be >= 1")
    ds = _dataset(stl_length, source, now or _dt.datetime.now(_dt.UTC))
    ds.EncapsulatedDocument = b""  # a marker: split the file around it
    data = _file_bytes(ds)
    marker = _element_header(0)
    at = data.index(marker)
    padded = stl_length + (stl_length & 1)
    return data[:at] + _element_header(padded), data[at + len(marker):]


def header(stl_length: int, source: Source, *, now=None) -> bytes:
    """``parts`` as one value to keep beside the model: the prefix's length
    (8 bytes, little endian), the prefix, the suffix."""
    prefix, suffix = parts(stl_length, source, now=now)
    return struct.pack("<Q", len(prefix)) + prefix + suffix


def around(stl: bytes, kept: bytes) -> bytes:
    """The instance from the model and its ``header``."""
    (n,) = struct.unpack_from("<Q", kept)
    prefix, suffix = kept[8:8 + n], kept[8 + n:]
    return prefix + bytes(stl) + (b"\0" if len(stl) & 1 else b"") + suffix


def encapsulate(stl: bytes, source: Source, *, now=None) -> bytes:
    """The Encapsulated STL instance of ``stl`` as a Part-10 file."""
    prefix, suffix = parts(len(stl), source, now=now)
    return prefix + bytes(stl) + (b"\0" if len(stl) & 1 else b"") + suffix


def payload(instance: bytes) -> bytes:
    """The STL inside an Encapsulated STL instance (its stated length)."""
    ds = dcmread(io.BytesIO(instance))
    if ds.SOPClassUID != ENCAPSULATED_STL_STORAGE:
        raise UnreadableInput("not an Encapsulated STL instance")
    return bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
