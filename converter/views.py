"""Looking at a volume before converting it: slice views in the patient
frame with their orientation letters, the map from a view's pixel to
patient millimetres, the histogram with the suggested levels, and the
region a level would turn into the surface.

The views are the radiological ones, whatever the acquisition: an
``axial`` view shows the patient's left on the right and anterior at the
top; ``coronal`` left on the right and superior at the top; ``sagittal``
anterior on the left and superior at the top.  Each view runs along the
index axis of the volume that is closest to its patient axis (for an
oblique series, the nearest), so a view is a plane of voxels, never
resampled: its edges carry the letters of where they really point
(``"LA"`` for a view tilted between left and anterior).  Nothing here
mirrors anything: a view is flipped only to put the patient where a reader
expects, and its letters say where each edge is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .marching import inside_mask
from .presets import PRESETS, otsu_level

#: patient axes of LPS: +x is left, +y posterior, +z superior
LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
#: a view's fixed patient axis and, for its columns and rows, the patient
#: direction they run towards (axis, sign)
PLANES = {
    "axial": (2, (0, +1), (1, +1)),  # columns to the left, rows to posterior
    "coronal": (1, (0, +1), (2, -1)),  # columns to the left, rows to inferior
    "sagittal": (0, (1, +1), (2, -1)),  # columns to posterior, rows to inferior
}
#: a direction's component counts in its letters from this cosine (15°)
LETTER_COSINE = 0.26
#: histogram bins
BINS = 256


def letters(direction) -> str:
    """Orientation letters of a direction in LPS, largest component first
    (``[1, 0, 0]`` → ``"L"``; 45° between left and anterior → ``"LA"``)."""
    v = np.asarray(direction, dtype=np.float64)
    v = v / (np.linalg.norm(v) or 1.0)
    order = np.argsort(-np.abs(v), kind="stable")
    out = [LETTERS[a][int(v[a] > 0)] for a in order if abs(v[a]) >= LETTER_COSINE]
    return "".join(out) or LETTERS[order[0]][int(v[order[0]] > 0)]


def steps(vol) -> np.ndarray:
    """(3, 3): the patient-frame step, in mm, of one index along each of the
    volume's axes (slice, row, column)."""
    sr, sc = vol.pixel_spacing
    if len(vol.positions) > 1:
        k = (vol.positions[-1] - vol.positions[0]) / (len(vol.positions) - 1)
    else:
        k = np.cross(vol.row_dir, vol.col_dir)
    return np.stack([k, vol.col_dir * sr, vol.row_dir * sc])


def patient_axes(vol) -> tuple[int, int, int]:
    """For each patient axis (x, y, z), the volume axis closest to it (a
    one-to-one match, chosen by the largest sum of cosines)."""
    unit = steps(vol)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    best = max(itertools.permutations(range(3)),
               key=lambda p: sum(abs(unit[p[a], a]) for a in range(3)))
    return tuple(best)


@dataclass(frozen=True)
class View:
    """One plane of a volume as shown: which volume axis is fixed, which
    runs along the columns and the rows, and whether each is reversed."""

    plane: str
    fixed: int  # the volume axis the index runs along
    column: int  # the volume axis along the image's columns (left to right)
    row: int  # the volume axis along the image's rows (top to bottom)
    column_flip: bool
    row_flip: bool
    shape: tuple  # the volume's shape

    @property
    def count(self) -> int:
        return self.shape[self.fixed]

    @property
    def width(self) -> int:
        return self.shape[self.column]

    @property
    def height(self) -> int:
        return self.shape[self.row]


def view(vol, plane: str) -> View:
    """The ``plane`` (``axial``, ``coronal`` or ``sagittal``) of ``vol``."""
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    fixed_axis, (c_axis, c_sign), (r_axis, r_sign) = PLANES[plane]
    of = patient_axes(vol)
    step = steps(vol)
    column, row = of[c_axis], of[r_axis]
    return View(plane, of[fixed_axis], column, row,
                bool(step[column, c_axis] * c_sign < 0), bool(step[row, r_axis] * r_sign < 0),
                tuple(vol.data.shape))


def plane_of(data: np.ndarray, v: View, index: int) -> np.ndarray:
    """The image (height × width) of ``data`` at ``index`` along ``v.fixed``
    (a view of the array where it can be, no copy)."""
    if not 0 <= index < v.count:
        raise IndexError(f"index must be from 0 to {v.count - 1}")
    taken = np.take(data, index, axis=v.fixed)
    rest = [a for a in range(3) if a != v.fixed]  # the taken image's axes, in order
    image = taken if rest.index(v.row) == 0 else taken.T
    if v.row_flip:
        image = image[::-1]
    if v.column_flip:
        image = image[:, ::-1]
    return image


def geometry(vol, v: View) -> dict:
    """A view's size, pixel size, edge letters and its map to patient mm:
    ``origin + column * c + row * r + index * k`` (linear: exact for evenly
    spaced slices, tilted or not)."""
    step = steps(vol)
    col = step[v.column] * (-1 if v.column_flip else 1)
    row = step[v.row] * (-1 if v.row_flip else 1)
    start = [0, 0, 0]
    start[v.column] = v.width - 1 if v.column_flip else 0
    start[v.row] = v.height - 1 if v.row_flip else 0
    origin = vol.index_to_patient(np.array([start], dtype=np.float64))[0]
    return {
        "count": v.count, "width": v.width, "height": v.height,
        "pixel_mm": [round(float(np.linalg.norm(col)), 6), round(float(np.linalg.norm(row)), 6)],
        "edges": {"right": letters(col), "left": letters(-col),
                  "bottom": letters(row), "top": letters(-row)},
        "to_patient": {"origin": _mm(origin), "column": _mm(col), "row": _mm(row),
                       "index": _mm(step[v.fixed])},
    }


def bounds(vol) -> dict:
    """The box, in patient mm, that holds every voxel centre."""
    n = np.array(vol.data.shape) - 1
    corners = np.array(list(itertools.product(*[(0, m) for m in n])), dtype=np.float64)
    points = vol.index_to_patient(corners)
    return {"min": _mm(points.min(axis=0)), "max": _mm(points.max(axis=0))}


def _mm(values) -> list:
    return [round(float(x), 4) + 0.0 for x in values]  # + 0.0: no -0.0


def overlay_mask(image: np.ndarray, level: float) -> np.ndarray:
    """The pixels of a view the surface at ``level`` encloses: the converter's
    own inside test (``marching.inside_mask``)."""
    return inside_mask(image, level)


def summary(data: np.ndarray) -> dict:
    """What showing a volume needs at once, from one cheap look: its value
    ``range``, a default grey ``window`` (the 1st to 99th percentile) and
    Otsu's level (both on a regular subsample)."""
    step = max(1, int(np.ceil((data.size / 2_000_000) ** (1 / 3))))
    sample = np.asarray(data[::step, ::step, ::step])
    lo, hi = float(data.min()), float(data.max())
    low, high = (float(v) for v in np.percentile(sample, [1, 99]))
    return {"range": [lo, hi], "window": [low, high if high > low else low + 1],
            "otsu": round(otsu_level(data), 3)}


def histogram(data: np.ndarray, modality: str, *, bins: int = BINS, otsu=None) -> dict:
    """Bin edges, counts and range of ``data``, and the suggested levels: each
    preset that applies to the modality (CT presets in HU) and Otsu's
    (``otsu`` when it is known)."""
    lo, hi = float(data.min()), float(data.max())
    if data.dtype.kind in "iu":
        # integers: whole-number bins, counted without a float copy
        width = max(1, int(np.ceil((hi - lo + 1) / bins)))
        nbins = int((hi - lo) // width) + 1
        per_value = _value_counts(data, int(lo), int(hi))
        padded = np.zeros(nbins * width, dtype=np.int64)
        padded[:len(per_value)] = per_value
        counts = padded.reshape(nbins, width).sum(axis=1)
        edges = lo + width * np.arange(nbins + 1, dtype=np.float64)
    else:
        counts, edges = np.histogram(data, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    suggested = [{"name": name, "label": p.label, "value": float(p.level),
                  "region": "below" if p.inverted else "above"}
                 for name, p in PRESETS.items()
                 if p.level is not None and (modality == "CT" or not p.ct_only)]
    suggested.append({"name": "auto", "label": PRESETS["auto"].label,
                      "value": round(otsu_level(data), 3) if otsu is None else otsu,
                      "region": "above"})
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.astype(int).tolist(),
            "range": [lo, hi], "unit": unit(modality), "suggested": suggested}


def _value_counts(data: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """How many voxels hold each whole value from ``lo`` to ``hi``, one slice
    at a time (no volume-sized temporary); int16 through its uint16 view
    (order kept by flipping the sign bit), the fastest count numpy has."""
    if data.dtype == np.int16:
        counts = np.zeros(1 << 16, dtype=np.int64)
        for plane in data:
            counts += np.bincount((np.ascontiguousarray(plane).view(np.uint16) ^ 0x8000).ravel(),
                                  minlength=1 << 16)
        return counts[lo + 0x8000:hi + 0x8000 + 1]
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    for plane in data:
        counts += np.bincount((plane.astype(np.int64) - lo).ravel(), minlength=hi - lo + 1)
    return counts


def acquired(listing, info) -> str | None:
    """When the series was acquired (``YYYY-MM-DDTHH:MM:SS``, as the files
    say it, no zone), from its first slice's header; None when it says not.
    For the person choosing a series only: never to be recorded."""
    import pydicom

    from .quiet import quiet_pydicom

    first = listing.stacks[info.index].slices[0].item
    tags = ["AcquisitionDate", "AcquisitionTime", "SeriesDate", "SeriesTime",
            "ContentDate", "ContentTime", "StudyDate", "StudyTime"]
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(first.source(), stop_before_pixels=True, force=True,
                                 specific_tags=tags)
    except Exception:  # an odd header: the time is only a help for choosing
        return None
    for prefix in ("Acquisition", "Series", "Content", "Study"):
        date = str(ds.get(prefix + "Date", "") or "").strip()
        clock = str(ds.get(prefix + "Time", "") or "").strip()
        if len(date) == 8 and date.isdigit():
            out = f"{date[:4]}-{date[4:6]}-{date[6:]}"
            digits = clock.split(".")[0]
            if len(digits) >= 4 and digits.isdigit():
                digits = digits.ljust(6, "0")
                out += f"T{digits[:2]}:{digits[2:4]}:{digits[4:6]}"
            return out
    return None


def unit(modality: str) -> str:
    """What a volume's values are in: HU for CT, else the modality's own units."""
    return "HU" if modality == "CT" else "modality units"


def window(default, width=None, level=None) -> tuple[float, float]:
    """The (low, high) values shown black and white: from ``width`` and
    ``level`` when given, else ``default`` (``summary``'s window)."""
    if width is not None and level is not None:
        return level - width / 2.0, level + width / 2.0
    return float(default[0]), float(default[1])


def grey(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """``image`` windowed to 0–255 (uint8)."""
    scale = 255.0 / max(high - low, 1e-6)
    out = (image.astype(np.float32) - np.float32(low)) * np.float32(scale)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)
