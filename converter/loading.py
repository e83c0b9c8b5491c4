"""Decode a chosen series into one preallocated volume in modality units.

Uncompressed little-endian pixels are read straight from the files at the
offset the header scan found (by threads side by side: file reads and
numpy's loops release the GIL); everything else is decoded by pydicom's
pixel backends (pylibjpeg plugins, Pillow, numpy; GDCM only where nothing
else decodes the syntax) in throwaway forked processes
(:mod:`converter.sandbox`), after every frame's codestream header has been
checked against the image header (:mod:`converter.codestream`), one object
at a time, and copied straight into the volume in native byte order; no
dataset keeps its decoded array.  CT values become Hounsfield units through rescale
slope and intercept; PixelPaddingValue voxels become background.  The volume
stays int16 while rescaling is integral and the values fit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import codestream
from .decoders import is_decoder_failure, prefer_safe_decoders
from .errors import UnreadableInput
from .quiet import silence_pydicom_for_good
from .volume import Volume

#: refuse volumes larger than this many bytes (at 2 bytes a voxel)
MAX_VOLUME_BYTES = 4 * 1024**3
_PARALLEL_MIN_SLICES = 48
#: address space the loading process keeps for itself while decoding processes run
_RESERVE = 128 * 1024**2
_PAD_MARK = np.iinfo(np.int16).min


def transfer_syntax_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else f"transfer syntax {uid}"


def decode(source, frame=None):
    """Decode the pixel data of ``source`` (path or file) → ndarray in native byte order.

    The codestream of every frame is checked against the header first
    (:mod:`converter.codestream`); decoders that abort on malformed streams
    are not used where another decodes the syntax
    (:func:`converter.decoders.prefer_safe_decoders`).

    Raises ``UnreadableInput`` with ``codec_missing`` or ``corrupt_pixel_data``.
    """
    import pydicom
    from pydicom.pixels import pixel_array


    prefer_safe_decoders()
    try:
        ds = pydicom.dcmread(source, force=True)
    except BaseException as exc:  # any parse failure of a listed file is corruption
        if not is_decoder_failure(exc):
            raise
        raise UnreadableInput("a file could not be read again to decode its pixels",
                              code="corrupt_pixel_data") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise UnreadableInput("an image has no pixel data", code="corrupt_pixel_data")
    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta:
        # a bare dataset without file meta: name the encoding pydicom detected
        from pydicom.uid import (
            ExplicitVRBigEndian,
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
        )

        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                  ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ts = str(meta.TransferSyntaxUID)
    try:
        codestream.check_dataset(ds, ts)
        arr = pixel_array(ds, index=frame) if frame is not None else pixel_array(ds)
    except UnreadableInput:
        raise
    except BaseException as exc:
        if not is_decoder_failure(exc):
            raise
        if isinstance(exc, (NotImplementedError, ImportError, RuntimeError)) \
                and _is_missing_codec(exc):
            raise UnreadableInput(
                f"no decoder is installed for {transfer_syntax_name(ts)}", code="codec_missing"
            ) from None
        raise UnreadableInput("the pixel data cannot be decoded (corrupt, truncated or an "
                              "unsupported variant)", code="corrupt_pixel_data") from None
    finally:
        del ds
    return native_order(arr)


def native_order(arr):
    """``arr`` with its values in this machine's byte order (big-endian pixel
    data arrive as ``>i2``, and a view of their words would swap them)."""
    if arr.dtype.isnative:
        return arr
    return arr.astype(arr.dtype.newbyteorder("="))


def _is_missing_codec(exc) -> bool:
    """True when no decoder could even try; False when decoders tried and failed."""
    text = str(exc).lower()
    if "exceptions were raised by all available plugins" in text:
        return False
    return isinstance(exc, (NotImplementedError, ImportError)) or "missing" in text \
        or "no pixel data decoders" in text or "unavailable" in text


def _decode_plain(item_source, frame):
    arr = decode(item_source, frame)
    if arr.ndim != 2:
        raise UnreadableInput("colour or multi-sample images cannot be meshed",
                              code="corrupt_pixel_data")
    return arr


class _NeedsFloat(Exception):
    """Rescaled values do not fit int16: load again as float32."""


def _start_reader(share):
    """Pool initializer: quiet, and within this reader's share of the memory limit."""
    from .sandbox import limit_growth  # sandbox imports this module

    limit_growth(share)
    silence_pydicom_for_good()


class ReadingPool:
    """Forked processes for reading headers with pydicom, started on first
    use (:meth:`get`), so a series the converter reads on its own never pays
    for them.  (Pixels are decoded in :mod:`converter.sandbox`'s throwaway
    processes, whose death ends the series, not the caller.)"""

    def __init__(self, workers):
        self.workers = workers
        self._pool = None

    def get(self):
        """The ``multiprocessing`` pool, forked now if it is not running yet."""
        if self._pool is None:
            import multiprocessing as mp

            from .sandbox import child_share  # sandbox imports this module

            # the readers share this process's memory limit, as the decoders do
            self._pool = mp.get_context("fork").Pool(self.workers, initializer=_start_reader,
                                                     initargs=(child_share(self.workers),))
        return self._pool

    def terminate(self):
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None


def reading_pool(workers):
    """A :class:`ReadingPool` of ``workers`` processes, or None for one worker
    (or where fork is not available).

    Processes are forked when first needed: do not start threads before
    reading is done (forking a process that runs threads is unsafe), and
    terminate the pool afterwards.
    """
    import multiprocessing as mp

    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        return None
    return ReadingPool(workers)


def load_volume(listing, info, *, progress=None, workers=1, pool=None) -> Volume:
    """Decode the series ``info`` of ``listing`` into a ``Volume``.

    Parameters
    ----------
    listing : volume.Listing
    info : SeriesInfo
        One of ``listing.series``.
    progress : callable(fraction), optional
    workers : int
        Readers side by side: threads for uncompressed pixels (read straight
        from the files into the volume), throwaway processes for pixels
        pydicom must decode (one for any number below 2, or a small series).
    pool : ReadingPool, optional
        The header readers (see :func:`reading_pool`); unused here.
    """
    stack = listing.stacks[info.index]
    slices, facts = stack.slices, stack.header
    n, rows, cols = len(slices), facts["rows"], facts["columns"]
    if n * rows * cols * 2 > MAX_VOLUME_BYTES:
        raise UnreadableInput(
            f"the series is too large ({n}×{rows}×{cols} voxels); the limit is "
            f"{MAX_VOLUME_BYTES // 1024**3} GiB", code="too_large")
    if rows < 1 or cols < 1:
        raise UnreadableInput(f"the images hold no pixels ({rows}×{cols})",
                              code="corrupt_pixel_data")
    if facts["samples"] != 1:
        raise UnreadableInput("colour images cannot be meshed", code="corrupt_pixel_data")
    integral = all(float(s.slope).is_integer() and float(s.intercept).is_integer() for s in slices)
    try:
        volume, lowest, had_padding, stats = _fill(slices, facts, integral, progress, workers, pool)
    except _NeedsFloat:
        volume, lowest, had_padding, stats = _fill(slices, facts, False, progress, workers, pool)
    if not np.isfinite(lowest):
        lowest = -1024.0
    background = min(-1024.0, lowest) if facts["modality"] == "CT" else lowest
    if had_padding:
        pad_mark = _PAD_MARK if volume.dtype == np.int16 else -np.inf
        volume[volume == pad_mark] = background
        stats = (None, None, None)  # the summaries saw the pad mark, not the background
    ori = slices[0].orientation
    return Volume(
        data=volume,
        positions=np.array([s.position for s in slices]),
        row_dir=ori[:3] / np.linalg.norm(ori[:3]),
        col_dir=ori[3:] / np.linalg.norm(ori[3:]),
        pixel_spacing=slices[0].spacing,
        modality=facts["modality"],
        background=background,
        info=info,
        warnings=list(stack.warnings),
        slice_range=stats[0],
        row_max=stats[1],
        col_max=stats[2],
    )


def _fill(slices, facts, integral, progress, workers, pool):
    """Decode every slice into one new volume; (volume, lowest real value, padding
    seen, (per slice min/max, row maxima, column maxima))."""
    n, rows, cols = len(slices), facts["rows"], facts["columns"]
    dtype = np.int16 if integral else np.float32
    arrays = _Arrays(np.empty((n, rows, cols), dtype), np.empty((n, 2), dtype),
                     np.empty((n, rows), dtype), np.empty((n, cols), dtype))
    padding = _padding_range(facts)
    done = [0]

    def store(k, raw):
        result = _store_slice(arrays, k, raw, slices[k], padding, integral)
        done[0] += 1
        if progress and (done[0] % 8 == 0 or done[0] == n):
            progress(done[0] / n)
        return result

    if all(s.native is not None for s in slices):
        if workers > 1 and n >= _PARALLEL_MIN_SLICES:
            # file reads and numpy's loops release the GIL: threads read side by side
            from concurrent.futures import ThreadPoolExecutor

            def chunk(ks):
                return [_store_slice(arrays, k, _read_native(slices[k], rows, cols), slices[k],
                                     padding, integral) for k in ks]

            results = []
            with ThreadPoolExecutor(max_workers=workers) as readers:
                for part in readers.map(chunk, [range(i, min(n, i + 8)) for i in range(0, n, 8)]):
                    results.extend(part)
                    if progress:
                        progress(len(results) / n)
        else:
            results = [store(k, _read_native(slices[k], rows, cols)) for k in range(n)]
    else:
        decoded = _decoded(slices, workers, pool, (rows, cols))
        results = [store(k, raw) for k, raw in enumerate(decoded)]
    return _filled(arrays, results)


class _Arrays(NamedTuple):
    volume: np.ndarray
    slice_range: np.ndarray  # (n, 2): min and max of each slice
    row_max: np.ndarray  # (n, rows)
    col_max: np.ndarray  # (n, cols)


def _filled(arrays, results):
    lowest = min((low for low, _ in results), default=np.inf)
    return (arrays.volume, lowest, any(padded for _, padded in results),
            (arrays.slice_range, arrays.row_max, arrays.col_max))


def _store_slice(arrays, k, raw, s, padding, integral):
    """Rescale slice ``k`` into the volume and note its summaries (while it is in cache)."""
    raw = native_order(raw)
    if raw.shape != arrays.volume.shape[1:]:
        raise UnreadableInput("an image's size does not match its header",
                              code="corrupt_pixel_data")
    result = _store(arrays.volume[k], raw, s, padding, integral)
    plane = arrays.volume[k]
    plane.max(axis=1, out=arrays.row_max[k])
    plane.max(axis=0, out=arrays.col_max[k])
    arrays.slice_range[k] = plane.min(), arrays.row_max[k].max()
    return result


def _store(out, raw, s, padding, integral):
    """Rescale one slice into ``out`` (modality units); (lowest real value, padded)."""
    if padding is None and integral:  # the common case: no temporaries but the slice
        lo, hi = raw.min(), raw.max()
        slope, intercept = int(s.slope), int(s.intercept)
        low, high = sorted((int(lo) * slope + intercept, int(hi) * slope + intercept))
        if low < -32767 or high > 32767:
            raise _NeedsFloat
        if raw.dtype.itemsize == 2:
            # 16-bit wrap-around arithmetic is exact when the result fits int16
            words = raw.view(np.int16)
            if slope == 1:
                np.add(words, np.int16(_wrap16(intercept)), out=out)
            else:
                np.multiply(words, np.int16(_wrap16(slope)), out=out)
                out += np.int16(_wrap16(intercept))
        else:
            values = raw.astype(np.int32)
            if slope != 1:
                values *= slope
            values += intercept
            out[...] = values
        return float(low), False
    pad_mask = None
    if padding is not None:
        pad_mask = (raw >= padding[0]) & (raw <= padding[1])
    values = _rescale(raw, s.slope, s.intercept, integral)
    if integral and (values.min() < -32767 or values.max() > 32767):
        raise _NeedsFloat
    lowest = np.inf
    padded = False
    if pad_mask is not None and pad_mask.any():
        padded = True
        real = values[~pad_mask]
        if real.size:
            lowest = float(real.min())
        values[pad_mask] = _PAD_MARK if integral else -np.inf
    else:
        lowest = float(values.min())
    out[...] = values
    return lowest, padded


def _wrap16(value):
    """``value`` modulo 2**16, as an int16 value."""
    return (int(value) + 32768) % 65536 - 32768


def _read_native(s, rows, cols):
    """Uncompressed pixel values straight from the file (as pydicom returns them)."""
    offset, dtype, unused_bits = s.native
    dtype = np.dtype(dtype)
    count = rows * cols
    item = s.item
    try:
        if item.path is not None:
            with open(item.path, "rb") as fh:
                fh.seek(offset)
                arr = np.fromfile(fh, dtype, count)
        else:
            arr = np.frombuffer(item.data, dtype, count, offset).copy()
    except (OSError, ValueError):
        arr = np.zeros(0, dtype)
    if arr.size != count:
        raise UnreadableInput("the pixel data cannot be decoded (corrupt or truncated)",
                              code="corrupt_pixel_data")
    arr = arr.reshape(rows, cols)
    if unused_bits:  # as pydicom: ignore the unused high bits (sign-extending signed data)
        np.left_shift(arr, unused_bits, out=arr)
        np.right_shift(arr, unused_bits, out=arr)
    return arr


def _padding_range(facts):
    pad = facts.get("padding")
    if pad is None:
        return None
    try:
        pad = int(pad)
        limit = facts.get("padding_limit")
        limit = int(limit) if limit is not None else pad
    except (TypeError, ValueError):
        return None
    return (min(pad, limit), max(pad, limit))


def _rescale(raw, slope, intercept, integral):
    if integral:
        values = raw.astype(np.int32)
        if slope != 1:
            values *= int(slope)
        if intercept:
            values += int(intercept)
        return values
    values = raw.astype(np.float32)
    values *= np.float32(slope)
    values += np.float32(intercept)
    return values


def _decoded(slices, workers, pool=None, shape=(512, 512)):
    """Yield each slice's raw array, in order, decoded in ``workers`` throwaway
    forked processes (:mod:`converter.sandbox`): a decoder that crashes ends
    the series as ``corrupt_pixel_data``, never the caller.  A run of slices
    from one multi-frame object is one task: the object is decoded once and
    its frames come back one by one.  (``pool`` reads headers only.)"""
    from .sandbox import stream

    runs = []  # (item, frames or None)
    for s in slices:
        if s.frame is not None and runs and runs[-1][1] is not None \
                and runs[-1][0] is s.item:
            runs[-1][1].append(s.frame)
        else:
            runs.append((s.item, None if s.frame is None else [s.frame]))

    def task(k):
        item, frames = runs[k]
        if frames is None:
            yield _decode_plain(item.source(), None)
            return
        arr = decode(item.source())
        arr = arr if arr.ndim == 3 else arr[None]
        if max(frames) >= len(arr):
            raise UnreadableInput("an image holds fewer frames than its header declares",
                                  code="corrupt_pixel_data")
        for f in frames:
            yield arr[f]

    # this process keeps room for the frames in flight and their rescaling;
    # the decoding processes share the rest of its memory limit
    rows, cols = shape
    reserve = _RESERVE + 64 * rows * cols * 8
    yield from stream(task, len(runs), workers if len(slices) >= _PARALLEL_MIN_SLICES else 1,
                      reserve=reserve)
