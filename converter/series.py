"""Find the series in the inputs: read headers, classify, group, sort, choose.

Only headers are read here: plain files by :mod:`converter.headers`, the
rest by pydicom (``stop_before_pixels``).  A series is a
SeriesInstanceUID split further by orientation and image size.  Slices are
sorted by their position along the slice normal — never by InstanceNumber or
file name — and checked for duplicates, gaps, tilt and uneven spacing.
Warnings and errors hold counts and millimetres, never a DICOM value.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from . import codestream, headers
from .errors import NoUsableSeries, UnreadableInput
from .modality import modality_term
from .sources import iter_items
from .volume import Listing, SeriesInfo, Slice, Stack

ORIENTATION_TOL = 1e-4
DUPLICATE_TOL_MM = 1e-3


def _looks_like_dicom(head: bytes) -> bool:
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    # a bare dataset: starts with a group 0x0002 or 0x0008 tag (either byte order)
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _kind_of(ds) -> str | None:
    """Why a dataset is skipped, or None when it is an image to use."""
    sop = str(getattr(ds, "SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop == headers.DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        return "DICOMDIR"
    if kind := headers.non_image_kind(sop):
        return kind
    if "Rows" not in ds or "Columns" not in ds:
        return "no pixel data"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localizer"
    return None


def _floats(value, n):
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _first(seq_owner, seq_name):
    seq = seq_owner.get(seq_name) if seq_owner is not None else None
    return seq[0] if seq else None


def _frame_attr(per_frame, shared, seq_name, attr):
    for owner in (per_frame, shared):
        item = _first(owner, seq_name)
        if item is not None and attr in item:
            return item.get(attr)
    return None


def _slices_of(ds, item, native=None):
    """The image planes of one dataset (one for classic, many for enhanced)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        shared = _first(ds, "SharedFunctionalGroupsSequence")
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        out = []
        for i in range(frames):
            pf = per_frame[i] if i < len(per_frame) else None
            pos = _floats(_frame_attr(pf, shared, "PlanePositionSequence", "ImagePositionPatient") or [], 3)
            ori = _floats(_frame_attr(pf, shared, "PlaneOrientationSequence",
                                      "ImageOrientationPatient") or ds.get("ImageOrientationPatient") or [], 6)
            sp = _floats(_frame_attr(pf, shared, "PixelMeasuresSequence", "PixelSpacing")
                         or ds.get("PixelSpacing") or [], 2)
            if pos is None or ori is None or sp is None:
                return None
            s = _frame_attr(pf, shared, "PixelValueTransformationSequence", "RescaleSlope")
            b = _frame_attr(pf, shared, "PixelValueTransformationSequence", "RescaleIntercept")
            out.append(Slice(item, i, pos, ori, (float(sp[0]), float(sp[1])),
                             float(s) if s is not None else slope,
                             float(b) if b is not None else intercept))
        return out
    pos = _floats(ds.get("ImagePositionPatient") or [], 3)
    ori = _floats(ds.get("ImageOrientationPatient") or [], 6)
    sp = _floats(ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [], 2)
    if pos is None or ori is None or sp is None:
        return None
    return [Slice(item, None, pos, ori, (float(sp[0]), float(sp[1])), slope, intercept,
                  native)]


_NATIVE_SYNTAXES = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}  # -> implicit VR


def _read_header(item, pydicom):
    """The header (no pixels) and where it ended: (offset, the next 12 bytes)."""
    src = item.source()
    if isinstance(src, str):
        with open(src, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
            start = fh.tell()
            return ds, (start, fh.read(12))
    ds = pydicom.dcmread(src, stop_before_pixels=True, force=True)
    start = src.tell()
    return ds, (start, src.read(12))


def _native_pixels(ds, facts, where):
    """(value offset, dtype, unused high bits) when the pixel data that follows
    the header can be read as it is, as pydicom would return it; else None."""
    try:
        implicit = _NATIVE_SYNTAXES.get(str(ds.file_meta.get("TransferSyntaxUID", "") or ""))
        if implicit is None or ds.original_encoding != (implicit, True):
            return None
        allocated = facts["bits_allocated"]
        stored = int(ds.get("BitsStored", allocated) or allocated)
        start, head = where
        return headers.native_layout(facts, stored, implicit, start, head)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _header_facts(ds) -> dict:
    return {
        "modality": modality_term(ds.get("Modality")),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "bits_allocated": int(ds.get("BitsAllocated", 16) or 16),
        "pixel_representation": int(ds.get("PixelRepresentation", 0) or 0),
        "samples": int(ds.get("SamplesPerPixel", 1) or 1),
        "padding": ds.get("PixelPaddingValue"),
        "padding_limit": ds.get("PixelPaddingRangeLimit"),
        "multiframe": int(ds.get("NumberOfFrames", 1) or 1) > 1,
        "number": _int_or_none(ds.get("SeriesNumber")),
        "description": str(ds.get("SeriesDescription", "") or ""),
        "uid": str(ds.get("SeriesInstanceUID", "") or ""),
    }


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


#: a pool is worth its start-up from this many files on
PARALLEL_MIN_FILES = 64
#: headers that make forking one more pool process worth its start-up
HEADERS_PER_PROCESS = 400
_NOT_COUNTED = ("not DICOM", "unreadable")  # skip kinds that are not DICOM objects
NOT_DICOM = ("not DICOM", None, None)
#: a DICOM object whose header holds an element that cannot be interpreted
DAMAGED = "damaged header"
#: a DICOM object whose pixel data cannot hold the frames its header declares
CORRUPT_PIXELS = "corrupt pixel data"


def _examine_with_pydicom(item):
    """One candidate file → ``(skip kind, None, None)`` or ``(None, facts, slices)``,
    read by pydicom (for the files :mod:`converter.headers` leaves)."""
    if not _looks_like_dicom(item.head()):  # decided before pydicom's import
        return NOT_DICOM
    import pydicom

    try:
        ds, where = _read_header(item, pydicom)
    except Exception:
        return "unreadable", None, None
    try:
        kind = _kind_of(ds)
        if kind:
            return kind, None, None
        facts = _header_facts(ds)
        codestream.check_frame_table(ds, item, where)
        slices = _slices_of(ds, item, _native_pixels(ds, facts, where))
    except UnreadableInput:
        return CORRUPT_PIXELS, None, None
    except Exception:  # pydicom raises many kinds on a damaged element
        return DAMAGED, None, None
    if not slices:
        return "no geometry", None, None
    return None, facts, slices


def _examined(inputs, pool):
    """``(item, result)`` for every candidate, in input order.

    The quick reader (:mod:`converter.headers`) answers for the plain files
    here; the rest are read by pydicom — in ``pool`` (a
    :class:`converter.loading.ReadingPool`) when there are enough of them on
    disk.
    """
    items = list(iter_items(inputs))
    results = [headers.examine(item) for item in items]
    for k, result in enumerate(results):  # a stray file costs no pydicom import or pool
        if result is None and not _looks_like_dicom(items[k].head()):
            results[k] = NOT_DICOM
    slow = [k for k, result in enumerate(results) if result is None]
    forked = pool.get() if pool is not None and len(slow) >= PARALLEL_MIN_FILES \
        and all(items[k].path is not None for k in slow) else None
    if forked is not None:
        # a process is worth forking for every ~HEADERS_PER_PROCESS headers
        procs = min(pool.workers, -(-len(slow) // HEADERS_PER_PROCESS))
        pending = forked.map_async(_examine_with_pydicom, [items[k] for k in slow],
                                   chunksize=-(-len(slow) // procs))
        for k, result in zip(slow, pending.get(), strict=True):
            results[k] = result
    else:
        for k in slow:
            results[k] = _examine_with_pydicom(items[k])
    return zip(items, results, strict=True)


def _unplaced(item):
    """An image that carries no position, read by pydicom for an assumed geometry:
    ``(facts, slice, instance number, slice gap)`` (the slice without a position;
    orientation and pixel spacing None when missing), or None."""
    import pydicom

    try:
        ds, where = _read_header(item, pydicom)
        if _kind_of(ds) or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            return None
        facts = _header_facts(ds)
        codestream.check_frame_table(ds, item, where)
        gap = next((float(v) for v in (ds.get("SpacingBetweenSlices"), ds.get("SliceThickness"))
                    if _floats([v] if v is not None else [], 1) is not None and float(v) > 0),
                   None)
        sp = _floats(ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [], 2)
        return facts, Slice(
            item, None, None, _floats(ds.get("ImageOrientationPatient") or [], 6),
            None if sp is None else (float(sp[0]), float(sp[1])),
            float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0),
            _native_pixels(ds, facts, where)), _int_or_none(ds.get("InstanceNumber")), gap
    except Exception:  # a damaged element: it stays skipped
        return None


#: how to convert a series whose images carry no position (the refusal says so)
ASSUME_HINT = ("to convert it anyway, give --assume-geometry (assume_geometry): slices in "
               "instance order, spacing from the headers or --spacing DX,DY,DZ")


def _assumed_stacks(unplaced, spacing):
    """Stacks of images without positions, in instance order on an assumed grid.

    ``spacing`` (DX, DY, DZ) mm, or None for the headers' PixelSpacing and
    SpacingBetweenSlices (else SliceThickness).  The orientation is the
    images' own, or axial.  Raises ``NoUsableSeries`` (``no_spacing``) when
    neither says the spacing.
    """
    groups: dict = {}
    for order, (facts, sl, instance, gap) in enumerate(unplaced):
        key = (facts["uid"], facts["rows"], facts["columns"])
        groups.setdefault(key, (facts, []))[1].append(
            (instance if instance is not None else 1 << 62, order, sl, gap))
    stacks = []
    for (uid, _, _), (facts, members) in groups.items():
        members.sort(key=lambda m: m[:2])
        slices = [m[2] for m in members]
        gaps = [m[3] for m in members if m[3] is not None]
        pixel = next((sl.spacing for sl in slices if sl.spacing is not None), None)
        if spacing is not None:
            dx, dy, dz = spacing
            pixel, gap, source = (dy, dx), dz, "given"
        elif pixel is None or not gaps:
            raise NoUsableSeries(
                "the images carry no position and their headers do not say the "
                f"{'pixel' if pixel is None else 'slice'} spacing; give --spacing DX,DY,DZ "
                "(mm) with --assume-geometry", code="no_spacing")
        else:
            gap, source = float(np.median(gaps)), "from the headers"
        ori = next((sl.orientation for sl in slices if sl.orientation is not None),
                   np.array([1.0, 0, 0, 0, 1.0, 0]))
        normal = np.cross(ori[:3], ori[3:])
        normal /= np.linalg.norm(normal) or 1.0
        for k, sl in enumerate(slices):
            sl.position, sl.orientation, sl.spacing = k * gap * normal, ori, pixel
        stack = _sorted_stack(uid, facts, slices)
        stack.info.assumed = True
        stack.warnings.insert(0, (
            f"geometry assumed: the images carry no position; {len(slices)} slices in "
            f"instance order, {pixel[1]:g} × {pixel[0]:g} × {gap:g} mm ({source})"))
        stacks.append(stack)
    return stacks


def scan(inputs, *, progress=None, pool=None, assume_geometry=False, spacing=None) -> Listing:
    """Read every header in ``inputs`` and list the series found.

    Parameters
    ----------
    inputs : sequence of paths, bytes or binary files
    progress : callable(fraction), optional
    pool : converter.loading.ReadingPool, optional
        Reads with pydicom the headers of many files side by side (see
        :func:`converter.loading.reading_pool`); the listing is the same.
    assume_geometry : bool, optional
        List the images that carry no position too, as series on an assumed
        grid (``_assumed_stacks``); without it they are skipped, and a scan
        with nothing else is refused saying how to convert them.
    spacing : (DX, DY, DZ), optional
        The assumed grid's spacing, in place of the headers'.

    Returns
    -------
    Listing
        ``series`` (SeriesInfo list), ``skipped`` (kind → count), ``warnings``.

    Raises
    ------
    NoUsableSeries
        ``empty_input`` (no files), ``no_dicom`` (no DICOM among them),
        ``only_non_image`` (DICOM, but nothing to mesh).
    """
    skipped: Counter = Counter()
    groups: dict = {}
    files = 0
    dicom_files = 0
    unplaced = []
    for item, (kind, facts, slices) in _examined(inputs, pool):
        files += 1
        if kind not in _NOT_COUNTED:
            dicom_files += 1
        if kind == "no geometry" and assume_geometry and (found := _unplaced(item)):
            unplaced.append(found)
            continue
        if kind:
            skipped[kind] += 1
            continue
        for sl in slices:
            key = (facts["uid"], tuple(np.round(sl.orientation / ORIENTATION_TOL).astype(np.int64)),
                   facts["rows"], facts["columns"])
            groups.setdefault(key, (facts, []))[1].append(sl)
        if progress and files % 16 == 0:
            progress(min(0.99, files / (files + 16)))
    if files == 0:
        raise NoUsableSeries("the input is empty: no files found", code="empty_input")
    if dicom_files == 0:
        raise NoUsableSeries(f"no DICOM files found among {files} files", code="no_dicom")
    if not groups and skipped.get(DAMAGED) and skipped[DAMAGED] + skipped.get("no geometry", 0) \
            == dicom_files:
        raise UnreadableInput(
            f"{skipped[DAMAGED]} of {files} files look like DICOM but hold damaged header "
            "elements; nothing could be read", code="corrupt_header")
    if not groups and skipped.get(CORRUPT_PIXELS) and skipped[CORRUPT_PIXELS] \
            + skipped.get(DAMAGED, 0) + skipped.get("no geometry", 0) == dicom_files:
        raise UnreadableInput(
            f"{skipped[CORRUPT_PIXELS]} of {files} files hold pixel data that cannot hold the "
            "frames their header declares; nothing could be read", code="corrupt_pixel_data")
    if not groups and not unplaced and skipped.get("no geometry"):
        raise NoUsableSeries(
            f"{skipped['no geometry']} images carry no patient position and orientation, so "
            f"they cannot be placed in millimetres; {ASSUME_HINT}",
            code="no_geometry",
        )
    if not groups and not unplaced:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(skipped.items()))
        raise NoUsableSeries(
            f"only non-image DICOM objects found ({kinds}); there is no image series to convert",
            code="only_non_image",
        )
    stacks = _build_stacks(groups, skipped, _assumed_stacks(unplaced, spacing))
    if progress:
        progress(1.0)
    warnings = []
    if skipped.get("unreadable"):
        warnings.append(f"{skipped['unreadable']} files could not be read and were skipped")
    if skipped.get(DAMAGED):
        warnings.append(f"{skipped[DAMAGED]} files with damaged header elements were skipped")
    if skipped.get(CORRUPT_PIXELS):
        warnings.append(f"{skipped[CORRUPT_PIXELS]} files whose pixel data cannot hold their "
                        "frames were skipped")
    return Listing([s.info for s in stacks], dict(skipped), warnings,
                   {s.info.index: s for s in stacks}, files)


def _orientation_label(normal) -> str:
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.95:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _build_stacks(groups, skipped, assumed=()) -> list:
    parts_per_uid = Counter(key[0] for key in groups)
    biggest_per_uid: dict = {}
    for key, (_, sl) in groups.items():
        biggest_per_uid[key[0]] = max(biggest_per_uid.get(key[0], 0), len(sl))
    stacks = []
    part_no: Counter = Counter()
    for key, (facts, slices) in groups.items():
        uid = key[0]
        # a lone slice in another orientation than the rest of its series: a localizer
        if len(slices) == 1 and parts_per_uid[uid] > 1 and biggest_per_uid[uid] > 1:
            skipped["localizer"] += 1
            continue
        part_no[uid] += 1
        stack_uid = uid if parts_per_uid[uid] == 1 else f"{uid}#{part_no[uid]}"
        stacks.append(_sorted_stack(stack_uid, facts, slices))
    stacks.extend(assumed)
    stacks.sort(key=lambda s: (s.info.modality, s.info.number if s.info.number is not None else 1 << 30,
                               -s.info.slices))
    for i, stack in enumerate(stacks, start=1):
        stack.info.index = i
    return stacks


def _sorted_stack(uid, facts, slices) -> Stack:
    ori = slices[0].orientation
    row_dir, col_dir = ori[:3], ori[3:]
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal) or 1.0
    along = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    along = along[order]
    warnings = []
    positions = np.array([s.position for s in slices])
    if len(slices) > 1:
        dup = np.linalg.norm(np.diff(positions, axis=0), axis=1) < DUPLICATE_TOL_MM
        if dup.any():
            keep = np.concatenate([[True], ~dup])
            slices = [s for s, k in zip(slices, keep, strict=True) if k]
            along, positions = along[keep], positions[keep]
            warnings.append(f"{int(dup.sum())} duplicate slices (same position) dropped")
    gaps = np.diff(along)
    median = float(np.median(gaps)) if len(gaps) else 0.0
    if len(gaps):
        for k in np.flatnonzero(gaps > 1.5 * median)[:5]:
            warnings.append(f"gap of {gaps[k]:.2f} mm between slices {k} and {k + 1} "
                            f"(median spacing {median:.2f} mm); not interpolated")
        regular = gaps <= 1.5 * median
        if regular.any() and gaps[regular].max() - gaps[regular].min() > 0.01 * max(median, 1e-6):
            warnings.append(f"non-uniform slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm) "
                            "mapped exactly")
        step = positions[-1] - positions[0]
        length = np.linalg.norm(step)
        if length > 0:
            tilt = float(np.degrees(np.arccos(min(1.0, abs(np.dot(step, normal)) / length))))
            if tilt > 0.5:
                warnings.append(f"gantry tilt of {tilt:.1f}° mapped exactly (no resampling)")
    sr, sc = slices[0].spacing
    info = SeriesInfo(
        index=0, uid=uid, number=facts["number"], modality=facts["modality"], slices=len(slices),
        rows=facts["rows"], columns=facts["columns"], spacing=(abs(median), sr, sc),
        description=facts["description"], orientation=_orientation_label(normal),
        multiframe=facts["multiframe"],
    )
    return Stack(info, slices, facts, warnings)


def select(listing: Listing, series=None) -> SeriesInfo:
    """Choose a series: the largest volume, or by UID or series number.

    Raises
    ------
    NoUsableSeries
        ``series_not_found`` naming what is available, or ``single_slice``
        when every candidate has one slice.
    """
    candidates = listing.series
    if series is not None:
        wanted = str(series).strip()
        chosen = [s for s in candidates if s.uid == wanted]
        if not chosen:
            chosen = [s for s in candidates if s.uid.split("#")[0] == wanted]
        if not chosen and wanted.lstrip("-").isdigit():
            chosen = [s for s in candidates if s.number == int(wanted)]
        if not chosen:
            numbers = sorted({s.number for s in candidates if s.number is not None})
            shown = ", ".join(str(n) for n in numbers) or "none"
            raise NoUsableSeries(
                f"the requested series was not found; {len(candidates)} series available "
                f"(series numbers {shown})",
                code="series_not_found",
            )
        candidates = chosen
    volumes = [s for s in candidates if s.slices > 1]
    if not volumes:
        raise NoUsableSeries(
            "only a single slice was found; a surface needs a series of at least 2 slices",
            code="single_slice",
        )
    return max(volumes, key=lambda s: (s.voxels, s.slices))
