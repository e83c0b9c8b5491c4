"""De-identification before upload: the DICOM PS3.15 Basic Application Level
Confidentiality Profile, as ``deidentify_profile.json`` declares it.

The declaration is the one the upload page's script applies in the browser
(``web/static/deidentify.js``, served the same file): a table of tags and
actions (``X`` remove, ``Z`` empty, ``D`` dummy, ``U`` new UID), masks for
the repeating groups (curves, overlay data and comments), the few file-meta
elements the table does not name, and the two elements that say a file was
de-identified.  Every private element goes.

Only what the profile names changes: pydicom writes an element it was never
asked to convert back with its bytes as read, so the pixel data (native or
encapsulated, never decoded) and the geometry — positions, orientation,
spacing, rescale, the transfer syntax — come out byte for byte.  New UIDs are
``2.25.<128 random bits>``, the same new UID for the same old one within one
``Deidentifier`` (one run, one upload): a series stays one series.

``ephemesh deidentify IN… OUT`` (``converter/commands.py``) is the step an
API user runs before ``curl``.
"""

from __future__ import annotations

import functools
import io
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from .quiet import quiet_pydicom

PROFILE_PATH = Path(__file__).with_name("deidentify_profile.json")
#: DICOMDIR's media storage SOP class: an index of names and ids, never written out
DICOMDIR_UID = "1.2.840.10008.1.3.10"
#: VRs whose value is text (the dummies are per VR); the rest are bytes or numbers
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                      "TM", "UC", "UR", "UT", "UI"})


@dataclass(frozen=True)
class Profile:
    """The declaration, read once: ``action(tag)`` is X, Z, D, U or None (keep)."""

    tags: dict  # tag (int) -> (action, keyword, VR)
    masks: tuple  # ((value, mask, action), ...)
    file_meta: dict  # tag -> (action, keyword, VR), beyond the table
    dummy: dict  # VR -> text
    added: dict  # tag -> (keyword, VR, value)
    name: str
    group_lengths: str | None = None  # X: every (gggg,0000) but the file meta's goes

    def action(self, tag: int) -> str | None:
        entry = self.tags.get(tag) or self.file_meta.get(tag)
        if entry is not None:
            return entry[0]
        if tag & 0xFFFF == 0 and tag >> 16 != 0x0002 and self.group_lengths:
            return self.group_lengths
        for value, mask, action in self.masks:
            if tag & mask == value:
                return action
        return None

    def vr(self, tag: int) -> str | None:
        entry = self.tags.get(tag) or self.file_meta.get(tag)
        return entry[2] if entry else None


def _mask(pattern: str) -> tuple[int, int]:
    """``60xx3000`` → (0x60003000, 0xFF00FFFF)."""
    value = int(re.sub("x", "0", pattern), 16)
    mask = int("".join("0" if c == "x" else "F" for c in pattern), 16)
    return value, mask


@functools.cache
def profile() -> Profile:
    raw = json.loads(PROFILE_PATH.read_text(encoding="utf-8"))
    masks = tuple((*_mask(pattern), action) for pattern, action in raw["masks"].items())
    return Profile(
        tags={int(k, 16): tuple(v) for k, v in raw["tags"].items()},
        masks=masks,
        file_meta={int(k, 16): tuple(v) for k, v in raw["file_meta"].items()},
        dummy=dict(raw["dummy"]),
        added={int(k, 16): tuple(v) for k, v in raw["added"].items()},
        name=raw["name"],
        group_lengths=raw.get("group_lengths"),
    )


def new_uid() -> str:
    """A UID nobody else has: 2.25 and 128 random bits (PS3.5 B.2)."""
    return f"2.25.{secrets.randbits(128)}"


class Deidentifier:
    """Applies the profile to datasets; one instance maps UIDs for one upload."""

    def __init__(self, declared: Profile | None = None):
        self.profile = declared or profile()
        self.uids: dict[str, str] = {}

    def uid(self, old) -> str:
        old = str(old or "").rstrip("\0 ").strip()
        if not old:
            return old
        if old not in self.uids:
            self.uids[old] = new_uid()
        return self.uids[old]

    # ------------------------------------------------------------ datasets
    def dataset(self, ds) -> None:
        """De-identify ``ds`` (a pydicom ``Dataset``, its file meta too) in place."""
        from pydicom.dataelem import DataElement

        self._walk(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and len(meta):
            self._walk(meta)
        for tag, (_keyword, vr, value) in self.profile.added.items():
            ds[tag] = DataElement(tag, vr, value)
        if getattr(ds, "preamble", None) is not None:
            ds.preamble = b"\0" * 128

    def _walk(self, ds) -> None:
        from pydicom.tag import Tag

        for tag in list(ds.keys()):
            tag = Tag(tag)
            if tag.is_private:
                del ds[tag]
                continue
            action = self.profile.action(tag)
            vr = self._vr(ds, tag)
            if action is None:
                if vr == "SQ":
                    for item in ds[tag].value:
                        self._walk(item)
                continue  # untouched: written back with the bytes it was read with
            self._apply(ds, tag, vr, action)

    def _vr(self, ds, tag) -> str | None:
        """The element's VR: as encoded, else (implicit VR, or UN for a known
        tag, which pydicom converts as it reads it) the declared one."""
        vr = getattr(ds.get_item(tag), "VR", None)
        if vr and vr != "UN":
            return str(vr)
        declared = self.profile.vr(tag)
        if declared:
            return declared
        from pydicom.datadict import dictionary_VR

        try:
            return dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            return vr

    def _apply(self, ds, tag, vr, action) -> None:
        from pydicom.dataelem import DataElement
        from pydicom.sequence import Sequence

        if action == "X":
            del ds[tag]
        elif action == "U" and vr == "SQ":
            for item in ds[tag].value:
                self._walk(item)
        elif action == "U" or (action == "D" and vr == "UI"):
            value = ds[tag].value
            values = [value] if isinstance(value, str) or value is None else list(value)
            mapped = [self.uid(v) for v in values]
            ds[tag] = DataElement(tag, "UI", mapped[0] if len(mapped) == 1 else mapped)
        elif vr == "SQ":
            ds[tag] = DataElement(tag, "SQ", Sequence([]))
        elif action == "D" and vr in TEXT_VRS:
            ds[tag] = DataElement(tag, vr, self.profile.dummy.get(vr, ""))
        else:  # Z, or D on bytes and binary numbers: empty
            ds[tag] = DataElement(tag, vr or "UN", "" if vr in TEXT_VRS else b"")

    # ------------------------------------------------------------ files
    def file(self, source) -> bytes | None:
        """The de-identified bytes of one file (a path, bytes or a binary
        file), or None when it is not DICOM or is a DICOMDIR index."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        with quiet_pydicom():
            try:
                ds = pydicom.dcmread(source, force=True)
                if not _looks_like_dicom(ds):
                    return None
                if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_UID \
                        or "DirectoryRecordSequence" in ds:
                    return None
                self.dataset(ds)
                out = io.BytesIO()
                _write(ds, out)
            except (InvalidDicomError, ValueError, TypeError, KeyError, AttributeError,
                    OSError, EOFError, NotImplementedError, OverflowError):
                return None
        return out.getvalue()


def _looks_like_dicom(ds) -> bool:
    """``force=True`` reads anything: a dataset of real elements, or not."""
    tags = list(ds.keys())
    return bool(tags) and (len(ds.file_meta) > 0 or tags[0] >> 16 in (0x0002, 0x0008))


def _write(ds, fh) -> None:
    """Write ``ds`` as it was encoded: a file with its meta, or a bare dataset.

    A file whose meta says explicit VR but whose elements are implicit (pydicom
    reads it, with no VR on its elements) has them converted first, each with
    the dictionary's VR: only then can they be written explicitly."""
    from pydicom.filewriter import dcmwrite

    implicit, little = ds.original_encoding
    if not (len(ds.file_meta) and "TransferSyntaxUID" in ds.file_meta):
        dcmwrite(fh, ds, implicit_vr=implicit, little_endian=little, enforce_file_format=False)
        return
    try:
        dcmwrite(fh, ds, enforce_file_format=False)
    except TypeError:
        fh.seek(0)
        fh.truncate()
        _convert_all(ds)
        dcmwrite(fh, ds, enforce_file_format=False)


def _convert_all(ds) -> None:
    for elem in ds:  # iterating converts every raw element
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)


@dataclass
class Summary:
    written: int = 0
    skipped: int = 0  # not DICOM, unreadable, or a DICOMDIR index


def deidentify(inputs, output) -> Summary:
    """De-identify every DICOM file in ``inputs`` (files, folders, zips) into
    the folder ``output`` as ``000001.dcm``, ``000002.dcm``… (no input name
    is kept), with one UID mapping for the whole run."""
    from .sources import iter_items

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    worker = Deidentifier()
    summary = Summary()
    for item in iter_items(inputs):
        data = worker.file(item.data if item.data is not None else item.path)
        if data is None:
            summary.skipped += 1
            continue
        summary.written += 1
        target = out / f"{summary.written:06d}.dcm"
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return summary
