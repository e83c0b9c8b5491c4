"""The conversion pipeline: inputs → series → volume → surface → mesh → STL.

``convert`` is the one entry point the CLI and the worker call.  Each stage
reports progress as ``progress(stage, percent)`` with an overall percentage,
and its wall time lands in the report.  The report is JSON-safe and holds no
UIDs, names, descriptions or file names, so it can be kept and shown.

``ConvertOptions.workers`` is the one knob for cores: threads for reading
uncompressed slices, for the surface's slabs and for the report's facts
beside the STL write; forked processes for pydicom's header reads and
decoding.  The result is the same for any number.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import mesh as meshops
from . import writing
from .errors import NoUsableSeries
from .options import ConvertOptions
from .presets import PRESETS, get_preset, otsu_level
from .quiet import quiet_pydicom

# overall percent per stage: (where it starts, where it ends)
_STAGES = {"reading": (0, 40), "surface": (40, 75), "mesh": (75, 90), "writing": (90, 100)}


class _Level(NamedTuple):
    """The isovalue and where it comes from."""

    value: float
    inverted: bool  # the region below the level is meshed (airway)
    source: str  # "threshold", "preset bone", "preset auto (Otsu)", "structure NAME"
    lowest: float  # the data's lowest value (the pad lies at or below it)
    high: float | None = None  # a band: the region is from value up to (not including) high


class _Made(NamedTuple):
    """What a conversion made, for its report."""

    level: _Level
    verts: np.ndarray
    faces: np.ndarray
    notes: list  # what the mesh steps changed
    stl_bytes: int
    timings: dict
    topology: meshops.Topology
    measures: meshops.Measures
    degenerate: int  # triangles of no area to speak of


@dataclass
class ConversionResult:
    report: dict
    stl: bytes | None = None  # the file's bytes, whatever the format (report["file"])
    verts: np.ndarray | None = field(default=None, repr=False)
    faces: np.ndarray | None = field(default=None, repr=False)
    #: the converted series (``volume.Stack``), for ``encapsulated.source_of``
    stack: object = field(default=None, repr=False)
    #: the mesh reduced for a 3D view (``preview.preview``), when asked for
    preview: bytes | None = field(default=None, repr=False)


class _Progress:
    def __init__(self, callback):
        self.callback = callback
        self.last = -1.0

    def stage(self, name):
        lo, hi = _STAGES[name]

        def report(fraction, step=None):
            """``step`` names a long step within the stage (``"decimating"``):
            reported at once, under that name, so a bar that cannot move says why."""
            pct = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
            if self.callback and (step or pct - self.last >= 0.5 or fraction >= 1):
                self.last = pct
                self.callback(step or name, round(pct, 1))

        report(0.0)
        return report


def list_series(inputs, *, progress=None, assume_geometry=False, spacing=None):
    """Scan ``inputs`` and return the listing (``.series``, ``.skipped``, ``.warnings``);
    with ``assume_geometry``, series without positions too (see ``series.scan``)."""
    from .series import scan

    with quiet_pydicom():
        return scan(_as_list(inputs), progress=progress, assume_geometry=assume_geometry,
                    spacing=spacing)


def _as_list(inputs):
    if isinstance(inputs, (str, Path, bytes, bytearray)) or hasattr(inputs, "read"):
        return [inputs]
    return list(inputs)


def convert(inputs, options: ConvertOptions | None = None, *, output=None, progress=None,
            preview: bool = False):
    """Convert a DICOM series to a surface model (STL, 3MF, OBJ or PLY).

    Parameters
    ----------
    inputs : path, bytes, file object, or a list of them
        Folders (searched recursively), files, zip archives, raw bytes.
    options : ConvertOptions, optional
    output : path or binary file, optional
        Where to write the model (the format: ``options.format``, else the
        path's extension, else binary STL).  When omitted the file's bytes are
        returned in ``result.stl``.
    progress : callable(stage: str, percent: float), optional
        Called as work advances; ``percent`` is overall, 0–100.
    preview : bool, optional
        Also make the reduced mesh for a 3D view (``result.preview``, see
        ``converter.preview``), beside the write when more than one worker
        is allowed.

    Returns
    -------
    ConversionResult
        ``report`` (a JSON-safe dict), without ``output`` the ``stl`` bytes,
        with ``preview`` the ``preview`` bytes.

    Raises
    ------
    ConverterError
        ``UsageError`` for bad options, ``NoUsableSeries`` when nothing can be
        converted, ``UnreadableInput`` when the data cannot be read.
    """
    opts = (options or ConvertOptions()).validate()
    fmt = writing.choose_format(opts, _path_of(output))  # a bad extension fails before reading
    from .loading import load_volume, reading_pool
    from .series import scan, select

    bar = _Progress(progress)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    t = time.perf_counter()
    pool = reading_pool(opts.workers)  # forks when first used; no thread of ours runs yet
    try:
        with quiet_pydicom():
            on_read = bar.stage("reading")
            listing = scan(_as_list(inputs), progress=lambda f: on_read(0.1 * f), pool=pool,
                           assume_geometry=opts.assume_geometry, spacing=opts.spacing)
            info = select(listing, opts.series)
            vol = load_volume(listing, info, progress=lambda f: on_read(0.1 + 0.9 * f),
                              workers=opts.workers, pool=pool)
    finally:
        if pool is not None:
            pool.terminate()
    timings["read"] = time.perf_counter() - t

    structures = opts.structures()
    levels = ([_structure_level(s, vol) for s in structures] if structures
              else [(None, _choose_level(opts, vol))])
    on_surface, on_mesh = bar.stage("surface"), bar.stage("mesh")
    parts, mesh_warnings = [], []
    timings["surface"] = timings["mesh"] = 0.0
    share = 1.0 / len(levels)
    for k, (name, level) in enumerate(levels):
        t = time.perf_counter()
        verts, faces, offset = _extract_surface(
            vol, level, opts, lambda f, *step, k=k: on_surface((k + f) * share, *step))
        timings["surface"] += time.perf_counter() - t
        if k == len(levels) - 1:
            vol.data = None  # only the geometry is needed from here on: the voxels' pages
            # go back before the mesh steps allocate theirs (fresh pages are slow to touch)
        t = time.perf_counter()
        verts, faces, notes = _shape_mesh(verts, faces, offset, vol, opts,
                                          lambda f, *step, k=k: on_mesh((k + f) * share, *step))
        timings["mesh"] += time.perf_counter() - t
        mesh_warnings += [f"{name}: {n}" for n in notes] if name else notes
        parts.append(writing.Part(name or "model", verts, faces, writing.color(k)))
    level = levels[0][1]

    parts, placed = writing.place(parts, opts.frame)
    budget_note = None
    if opts.max_bytes is not None:
        parts, budget_note = writing.meet_budget(parts, fmt, opts.frame, opts.max_bytes,
                                                path=_path_of(output), assumed=info.assumed)
        if opts.frame == "print" and budget_note.get("triangles_after") is not None:
            # decimation moves vertices: rest the decimated model on z = 0 again
            parts, again = writing.place(parts, "print")
            placed = [round(a + b, 3) for a, b in zip(placed, again, strict=True)]
    verts, faces = writing.joined(parts)

    # the report's topology and measures (and the preview) run beside the
    # write (compiled kernels and zlib release the GIL) when more than one
    # worker is allowed
    facts_pool = facts_job = preview_job = None
    if opts.workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        facts_pool = ThreadPoolExecutor(max_workers=1 + preview)  # the preview on its own
        facts_job = facts_pool.submit(_mesh_facts, verts, faces)
        if preview:
            preview_job = facts_pool.submit(_preview, verts, faces)
    try:
        t = time.perf_counter()
        on_write = bar.stage("writing")
        data = None
        if output is None:
            import io

            buf = io.BytesIO()
            size = writing.write_model(parts, fmt, buf, opts.frame, assumed=info.assumed,
                                       workers=opts.workers)
            data = buf.getvalue()
        else:
            size = writing.write_model(parts, fmt, output, opts.frame, assumed=info.assumed,
                                       workers=opts.workers)
        on_write(1.0)
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        facts = facts_job.result() if facts_job else _mesh_facts(verts, faces)
        reduced = (preview_job.result() if preview_job
                   else _preview(verts, faces) if preview else None)
    finally:
        if facts_pool is not None:
            facts_pool.shutdown()

    made = _Made(level, verts, faces, mesh_warnings, size, timings, *facts)
    report = _report(listing, info, vol, opts, made)
    report.update(writing.report_entries(
        parts, levels, fmt, opts.frame, size, placed, budget_note, path=_path_of(output),
        assumed=info.assumed,  # one part: the whole mesh, measured for the report already
        volumes=[made.measures.volume] if len(parts) == 1 else None))
    return ConversionResult(report=report, stl=data, verts=verts, faces=faces,
                            stack=listing.stacks.get(info.index), preview=reduced)


def _path_of(output):
    """The output's path, or None for a file object (or no output)."""
    import os

    return output if isinstance(output, (str, os.PathLike)) else None


def _choose_level(opts: ConvertOptions, vol) -> _Level:
    """The level the options ask for, refused when it crosses no voxel."""
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
    return _Level(float(level), inverted, source, lo)


def _structure_level(structure, vol):
    """``(name, level)`` of a ``--structure``: the band from its low value up to
    its high one, refused (naming the structure) when no voxel is in it."""
    lo, hi = vol.value_range()
    unit = " HU" if vol.modality == "CT" else ""
    if not lo <= structure.low < hi or (structure.high is not None and structure.high <= lo):
        raise NoUsableSeries(
            f"structure {structure.name} ({structure.text().partition('=')[2]}{unit}) yields "
            f"no surface: the data range from {lo:g} to {hi:g}{unit}", code="no_surface")
    return structure.name, _Level(float(structure.low), False, f"structure {structure.name}",
                                  lo, structure.high)


def _safe_modality(vol) -> str:
    m = str(vol.modality or "OT")
    return m if m.isalnum() and len(m) <= 4 else "not CT"


def _extract_surface(vol, level: _Level, opts, on_progress):
    """Crop to where the level is crossed, run marching cubes closed by a background pad.

    Returns vertices (float32) in the crop's (slice, row, column) index
    space (fractional, may be -1 or n for the pad), outward-wound faces, and
    the crop's offset in the volume.
    """
    from .marching import marching_cubes
    from .region import Region, wanted

    data = vol.data
    region = Region(vol, opts) if wanted(opts) else None
    removed = None
    if level.inverted:
        inside, removed = _enclosed_only(data < level.value)
        box = _crop_box([inside.any(axis=(1, 2)), inside.any(axis=(0, 2)), inside.any(axis=(0, 1))])
        del inside
    else:
        # max projections: no temporary the size of the volume
        box = _crop_box(vol.crossing_box(level.value))
    if region is not None:
        box = region.narrow(box)
    crop = tuple(slice(lo, hi) for lo, hi in box)
    sub = data[crop]
    if level.inverted:
        # the region below the level: negate (in a wider type, for this crop only)
        sub = -sub.astype(np.float32 if sub.dtype.kind == "f" else np.int32)
        work_level = -level.value
        pad_value = _pad_value(-vol.value_range()[1], work_level, sub.dtype)
        sub[removed[crop]] = pad_value  # air connected to the outside is not airway
        del removed
    elif level.high is not None:
        # a band: inside where low < v < high, i.e. min(v - low, high - v) > 0
        wide = sub.astype(np.float32)
        sub = np.minimum(wide - np.float32(level.value), np.float32(level.high) - wide, out=wide)
        work_level = 0
        pad_value = _pad_value(min(level.lowest - level.value, -1), work_level, sub.dtype)
    else:
        work_level = level.value
        pad_value = _pad_value(level.lowest, work_level, sub.dtype)
    offset = np.array([lo for lo, _ in box], dtype=np.float64)
    if region is not None:  # the region's voxels only (voxels are dropped in place)
        if not sub.flags.writeable or (sub.base is not None and len(opts.structures()) > 1):
            sub = sub.copy()  # a volume shared read-only (the workspace's), or read again
        sub = region.apply(sub, work_level, pad_value, offset, workers=opts.workers)
        vol.warnings.extend(w for w in region.warnings if w not in vol.warnings)
        facts = region.report()  # with several structures, one entry each
        vol.region = facts if vol.region is None else (
            [*vol.region, facts] if isinstance(vol.region, list) else [vol.region, facts])
    # the pad layer is virtual: surfaces touching the crop's faces close without a padded copy
    verts, faces = marching_cubes(sub, work_level, step=opts.step, workers=opts.workers,
                                  progress=on_progress, pad=pad_value)
    del sub
    on_progress(1.0)
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
    from scipy import ndimage

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
    if vol.handedness() < 0:
        faces = meshops.flip_winding(faces, in_place=True)  # vertices are never mirrored
    if opts.smooth:  # on marching cubes' own vertices, before any part is dropped
        on_progress(0.2, "smoothing")
        verts = _smooth(verts_idx, faces, offset, vol, opts)
    else:
        verts = vol.index_to_patient(verts_idx, offset)
    if len(faces) and meshops.signed_volume(verts, faces) < 0:
        # should not happen; say so rather than write an inside-out mesh
        faces = faces[:, [0, 2, 1]]
        notes.append("mesh orientation corrected")
    on_progress(0.4)
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
    on_progress(0.6)
    if opts.decimate is not None or opts.max_triangles is not None:
        on_progress(0.6, "decimating")
        verts, faces = meshops.decimate(verts, faces, fraction=opts.decimate,
                                        max_triangles=opts.max_triangles, workers=opts.workers)
    on_progress(1.0)
    return verts, faces, notes


def _smooth(verts_idx, faces, offset, vol, opts):
    """Constrained smoothing in index space (each vertex stays by its grid edge,
    ± half the finest voxel across it, each part keeps its volume), in mm."""
    gaps = np.linalg.norm(np.diff(vol.positions, axis=0), axis=1)
    spacing = np.array([float(np.median(gaps)) if len(gaps) else 1.0, *vol.pixel_spacing])
    spacing = np.where(spacing > 0, spacing, spacing.max())
    half = 0.5 * opts.step * spacing.min() / spacing
    smoothed, _ = meshops.constrained_smooth(verts_idx, faces, opts.smooth, half,
                                             workers=opts.workers)
    return vol.index_to_patient(smoothed, offset)


def _preview(verts, faces) -> bytes:
    """The 3D view's reduced mesh: at most its share of the model as binary STL
    (whatever the format)."""
    from .preview import preview

    return preview(verts, faces, 84 + 50 * len(faces))


def _mesh_facts(verts, faces):
    """(topology, measures, degenerate triangles) of the final mesh, for the report."""
    return (meshops.topology(verts, faces), meshops.measures(verts, faces),
            meshops.degenerate_count(verts, faces))


def _report(listing, info, vol, opts, made: _Made) -> dict:
    """The JSON-safe report: no UID, description or file name."""
    available = [s.safe_dict() for s in listing.series]
    if opts.series is None:
        why = ("the only series" if len(available) == 1
               else f"the largest volume of {len(available)} series")
    else:
        why = "the series asked for"
    verts, faces, measured = made.verts, made.faces, made.measures
    bbox = [side.round(3).tolist() for side in meshops.bounds(verts)] if len(verts) else None
    return {
        "series": {"chosen": info.safe_dict(), "why": why, "available": available},
        "skipped": dict(listing.skipped),
        "threshold": {"value": made.level.value,
                      "unit": "HU" if vol.modality == "CT" else "modality units",
                      "source": made.level.source,
                      "region": "below" if made.level.inverted else "above"},
        "frame": opts.frame.upper(),
        "units": "mm",
        "options": {k: v for k, v in asdict(opts).items() if k not in ("series",)},
        "region": vol.region,
        "warnings": list(listing.warnings) + list(vol.warnings) + made.notes,
        "triangles": int(len(faces)),
        "vertices": int(len(verts)),
        "area_mm2": round(measured.area, 3),
        "volume_mm3": round(measured.volume, 3),
        "centroid_mm": measured.centroid.round(3).tolist() if len(faces) else None,
        "bbox_mm": bbox,
        "watertight": made.topology.watertight,
        "manifold": made.topology.manifold,
        "degenerate_triangles": made.degenerate,
        "components": made.topology.components,
        "timings_s": {k: round(v, 4) for k, v in made.timings.items()},
    }


__all__ = ["ConvertOptions", "ConversionResult", "convert", "list_series", "PRESETS"]
