"""The conversion pipeline: inputs → series → volume → surface → mesh → STL.

``convert`` is the one entry point the CLI and the worker call.  Each stage
reports progress as ``progress(stage, percent)`` with an overall percentage,
and its wall time lands in the report.  The report is JSON-safe and holds no
UIDs, names, descriptions or file names, so it can be kept and shown.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import mesh as meshops
from . import stl
from .errors import NoUsableSeries
from .options import ConvertOptions
from .presets import PRESETS, get_preset, otsu_level

# overall percent at the start of each stage
_STAGES = {"reading": (0, 40), "surface": (40, 75), "mesh": (75, 90), "writing": (90, 100)}


@dataclass
class ConversionResult:
    report: dict
    stl: bytes | None = None
    verts: np.ndarray | None = field(default=None, repr=False)
    faces: np.ndarray | None = field(default=None, repr=False)


class _Progress:
    def __init__(self, callback):
        self.callback = callback
        self.last = -1.0

    def stage(self, name):
        lo, hi = _STAGES[name]

        def report(fraction):
            pct = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
            if self.callback and (pct - self.last >= 0.5 or fraction >= 1):
                self.last = pct
                self.callback(name, round(pct, 1))

        report(0.0)
        return report


def list_series(inputs, *, progress=None):
    """Scan ``inputs`` and return the listing (``.series``, ``.skipped``, ``.warnings``)."""
    from .series import scan  # noqa: PLC0415

    with _quiet_pydicom():
        return scan(_as_list(inputs), progress=progress)


def _as_list(inputs):
    if isinstance(inputs, (str, Path, bytes, bytearray)) or hasattr(inputs, "read"):
        return [inputs]
    return list(inputs)


class _quiet_pydicom:
    """Keep pydicom's warnings and log records (which can hold values) away from sinks."""

    def __enter__(self):
        import logging  # noqa: PLC0415

        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore")
        self._logger = logging.getLogger("pydicom")
        self._old = (self._logger.level, self._logger.propagate, self._logger.disabled)
        self._logger.disabled = True
        return self

    def __exit__(self, *exc):
        self._logger.setLevel(self._old[0])
        self._logger.propagate, self._logger.disabled = self._old[1], self._old[2]
        self._warn.__exit__(*exc)
        return False


def convert(inputs, options: ConvertOptions | None = None, *, output=None, progress=None):
    """Convert a DICOM series to an STL surface.

    Parameters
    ----------
    inputs : path, bytes, file object, or a list of them
        Folders (searched recursively), files, zip archives, raw bytes.
    options : ConvertOptions, optional
    output : path or binary file, optional
        Where to write the STL.  When omitted the STL bytes are returned in
        ``result.stl``.
    progress : callable(stage: str, percent: float), optional
        Called as work advances; ``percent`` is overall, 0–100.

    Returns
    -------
    ConversionResult
        ``report`` (a JSON-safe dict) and, without ``output``, ``stl`` bytes.

    Raises
    ------
    ConverterError
        ``UsageError`` for bad options, ``NoUsableSeries`` when nothing can be
        converted, ``UnreadableInput`` when the data cannot be read.
    """
    opts = (options or ConvertOptions()).validate()
    from .loading import load_volume, reading_pool  # noqa: PLC0415
    from .series import scan, select  # noqa: PLC0415

    bar = _Progress(progress)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    t = time.perf_counter()
    pool = reading_pool(opts.workers)  # forks when first used; no thread of ours runs yet
    try:
        with _quiet_pydicom():
            on_read = bar.stage("reading")
            listing = scan(_as_list(inputs), progress=lambda f: on_read(0.1 * f), pool=pool)
            info = select(listing, opts.series)
            vol = load_volume(listing, info, progress=lambda f: on_read(0.1 + 0.9 * f),
                              workers=opts.workers, pool=pool)
    finally:
        if pool is not None:
            pool.terminate()
    timings["read"] = time.perf_counter() - t

    level, inverted, level_source, lowest = _choose_level(opts, vol)

    t = time.perf_counter()
    verts, faces, offset = _extract_surface(vol, level, inverted, opts, bar.stage("surface"),
                                            lowest)
    vol.data = None  # from here on only the geometry is needed: free the voxels early
    timings["surface"] = time.perf_counter() - t

    t = time.perf_counter()
    on_mesh = bar.stage("mesh")
    verts, faces, mesh_warnings = _shape_mesh(verts, faces, offset, vol, opts, on_mesh)
    timings["mesh"] = time.perf_counter() - t

    if opts.frame == "ras":  # 180° about z: (x, y, z) -> (-x, -y, z); a rotation, not a mirror
        verts = verts * np.array([-1.0, -1.0, 1.0])

    # the report's topology and measures run beside the STL write (compiled
    # kernels release the GIL) when more than one worker is allowed
    facts_pool = facts_job = None
    if opts.workers > 1:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        facts_pool = ThreadPoolExecutor(max_workers=1)
        facts_job = facts_pool.submit(_mesh_facts, verts, faces)
    try:
        t = time.perf_counter()
        on_write = bar.stage("writing")
        frame = opts.frame.upper()
        writer = stl.write_ascii if opts.ascii else stl.write_binary
        data = None
        if output is None:
            import io  # noqa: PLC0415

            buf = io.BytesIO()
            size = writer(verts, faces, buf, frame)
            data = buf.getvalue()
        else:
            size = writer(verts, faces, output, frame)
        on_write(1.0)
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        facts = facts_job.result() if facts_job else _mesh_facts(verts, faces)
    finally:
        if facts_pool is not None:
            facts_pool.shutdown()

    report = _report(listing, info, vol, opts, (level, level_source, inverted), verts, faces,
                     size, mesh_warnings, timings, facts)
    return ConversionResult(report=report, stl=data, verts=verts, faces=faces)


def _choose_level(opts: ConvertOptions, vol) -> tuple[float, bool, str, float]:
    """(level, inverted, where the level comes from, the data's lowest value)."""
    data = vol.data
    if opts.threshold is not None:
        level, inverted, source = opts.threshold, False, "threshold"
    else:
        name = opts.preset or ("bone" if vol.modality == "CT" else "auto")
        preset = get_preset(name)
        inverted = preset.inverted
        if preset.level is None:
            level, source = otsu_level(data), "preset auto (Otsu)"
        else:
            level, source = preset.level, f"preset {name}"
        if preset.ct_only and vol.modality != "CT":
            vol.warnings.append(
                f"preset {name} is defined in HU for CT; this series is {_safe_modality(vol)}"
            )
    lo, hi = vol.value_range()
    if not lo <= level < hi or (inverted and level <= lo):
        unit = " HU" if vol.modality == "CT" else ""
        raise NoUsableSeries(
            f"threshold {level:g}{unit} yields no surface: the data range from "
            f"{lo:g} to {hi:g}{unit}",
            code="no_surface",
        )
    return float(level), inverted, source, lo


def _safe_modality(vol) -> str:
    m = str(vol.modality or "OT")
    return m if m.isalnum() and len(m) <= 4 else "not CT"


def _extract_surface(vol, level, inverted, opts, on_progress, lowest=None):
    """Crop to where the level is crossed, run marching cubes closed by a background pad.

    Returns vertices (float32) in the crop's (slice, row, column) index
    space (fractional, may be -1 or n for the pad), outward-wound faces, and
    the crop's offset in the volume.
    """
    from .marching import marching_cubes  # noqa: PLC0415

    data = vol.data
    removed = None
    if inverted:
        inside, removed = _enclosed_only(data < level)
        box = _crop_box([inside.any(axis=(1, 2)), inside.any(axis=(0, 2)), inside.any(axis=(0, 1))])
        del inside
    else:
        # max projections: no temporary the size of the volume
        box = _crop_box(vol.crossing_box(level))
    crop = tuple(slice(lo, hi) for lo, hi in box)
    sub = data[crop]
    if inverted:
        # the region below the level: negate (in a wider type, for this crop only)
        sub = -sub.astype(np.float32 if sub.dtype.kind == "f" else np.int32)
        work_level = -level
        pad_value = _pad_value(-vol.value_range()[1], work_level, sub.dtype)
        sub[removed[crop]] = pad_value  # air connected to the outside is not airway
        del removed
    else:
        work_level = level
        pad_value = _pad_value(float(data.min()) if lowest is None else lowest, work_level,
                               sub.dtype)
    # the pad layer is virtual: surfaces touching the crop's faces close without a padded copy
    verts, faces = marching_cubes(sub, work_level, step=opts.step, workers=opts.workers,
                                  progress=on_progress, pad=pad_value)
    del sub
    on_progress(1.0)
    offset = np.array([lo for lo, _ in box], dtype=np.float64)
    return verts, faces, offset


def _crop_box(hits_per_axis):
    """Per axis, the index range where the region is, plus one voxel of margin."""
    box = []
    for hits in hits_per_axis:
        idx = np.flatnonzero(hits)
        if not len(idx):
            raise NoUsableSeries("the threshold yields no surface", code="no_surface")
        box.append((max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, len(hits))))
    return box


def _enclosed_only(mask):
    """Split ``mask`` into parts enclosed by the volume and parts touching its edge."""
    from scipy import ndimage  # noqa: PLC0415

    labels, count = ndimage.label(mask)
    edge = np.unique(np.concatenate([
        labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel(),
    ]))
    touching = np.isin(labels, edge[edge > 0])
    del labels
    enclosed = mask & ~touching
    if not enclosed.any():
        raise NoUsableSeries("no enclosed air found inside the body", code="no_surface")
    return enclosed, touching


def _pad_value(background, level, dtype):
    """The value padded around the crop: the volume's lowest value, below the level."""
    if np.dtype(dtype).kind == "f":
        return min(background, level - 1.0)
    info = np.iinfo(dtype)
    return int(max(min(int(np.floor(background)), int(np.floor(level)) - 1), info.min))


def _shape_mesh(verts_idx, faces, offset, vol, opts, on_progress):
    """Index (+ crop offset) → patient mm, orientation fix, then the optional mesh steps."""
    notes = []
    verts = vol.index_to_patient(verts_idx, offset)
    if vol.handedness() < 0:
        faces = meshops.flip_winding(faces, in_place=True)  # vertices are never mirrored
    if len(faces) and meshops.signed_volume(verts, faces) < 0:
        # should not happen; say so rather than write an inside-out mesh
        faces = faces[:, [0, 2, 1]]
        notes.append("mesh orientation corrected")
    on_progress(0.2)
    if opts.largest:
        verts, faces = meshops.keep_largest(verts, faces)
    if opts.min_island_mm3:
        before = meshops.components(faces, len(verts))[0]
        verts, faces = meshops.drop_islands(verts, faces, opts.min_island_mm3)
        after = meshops.components(faces, len(verts))[0]
        if before != after:
            notes.append(f"{before - after} islands below {opts.min_island_mm3:g} mm³ removed")
        if not len(faces):
            raise NoUsableSeries(
                f"every part is smaller than {opts.min_island_mm3:g} mm³", code="no_surface"
            )
    on_progress(0.4)
    if opts.smooth:
        verts, faces = meshops.taubin_smooth(verts, faces, opts.smooth)
    on_progress(0.6)
    if opts.decimate is not None or opts.max_triangles is not None:
        verts, faces = meshops.decimate(verts, faces, fraction=opts.decimate,
                                        max_triangles=opts.max_triangles)
    on_progress(1.0)
    return verts, faces, notes


def _mesh_facts(verts, faces):
    """(topology, measures) of the final mesh, for the report."""
    return meshops.topology(verts, faces), meshops.measures(verts, faces)


def _report(listing, info, vol, opts, surface, verts, faces, size, notes, timings, facts):
    level, level_source, inverted = surface
    topo, measured = facts
    available = [s.safe_dict() for s in listing.series]
    if opts.series is None:
        why = ("the only series" if len(available) == 1
               else f"the largest volume of {len(available)} series")
    else:
        why = "chosen by the caller"
    bbox = [side.round(3).tolist() for side in meshops.bounds(verts)] if len(verts) else None
    return {
        "series": {"chosen": info.safe_dict(), "why": why, "available": available},
        "skipped": dict(listing.skipped),
        "threshold": {"value": level, "unit": "HU" if vol.modality == "CT" else "modality units",
                      "source": level_source, "region": "below" if inverted else "above"},
        "frame": opts.frame.upper(),
        "units": "mm",
        "options": {k: v for k, v in asdict(opts).items() if k not in ("series",)},
        "warnings": list(listing.warnings) + list(vol.warnings) + notes,
        "triangles": int(len(faces)),
        "vertices": int(len(verts)),
        "area_mm2": round(measured.area, 3),
        "volume_mm3": round(measured.volume, 3),
        "centroid_mm": measured.centroid.round(3).tolist() if len(faces) else None,
        "bbox_mm": bbox,
        "watertight": topo.watertight,
        "manifold": topo.manifold,
        "components": topo.components,
        "stl": {"format": "ascii" if opts.ascii else "binary", "bytes": int(size),
                "header": "ephemesh SPACE=" + opts.frame.upper()},
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }


__all__ = ["ConvertOptions", "ConversionResult", "convert", "list_series", "PRESETS"]
