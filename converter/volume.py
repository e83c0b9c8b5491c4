"""What a scan finds and what the loader makes of it.

A scan (:mod:`converter.series`) lists ``SeriesInfo`` for the person choosing,
each backed by a ``Stack`` of ``Slice`` records (where each image plane comes
from and where it sits); together they make the ``Listing``.  The loader
turns the chosen stack into a ``Volume``: voxel values plus the exact map
from voxel index to patient mm.

Axis order of ``Volume.data`` is ``(slice, row, column)``.  Slice ``k`` sits at
``positions[k]`` (its ImagePositionPatient, LPS millimetres); within a slice,
column index ``c`` moves along ``row_dir`` by ``pixel_spacing[1]`` mm and row
index ``r`` moves along ``col_dir`` by ``pixel_spacing[0]`` mm, exactly as in
DICOM (PS3.3 C.7.6.2.1.1).  Between two slices positions are interpolated
linearly, so gantry tilt and non-uniform slice spacing map exactly: no
resampling, no assumed constant spacing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _mesh


@dataclass
class SeriesInfo:
    """What a caller needs to choose a series.  Never persisted by the worker
    as-is: ``uid`` and ``description`` are for the person choosing only."""

    index: int  # 1-based position in the listing (stable for one input)
    uid: str  # SeriesInstanceUID (plus a suffix when one UID was split)
    number: int | None  # SeriesNumber
    modality: str
    slices: int
    rows: int
    columns: int
    spacing: tuple[float, float, float]  # (slice, row, column) mm; slice = median gap
    description: str
    orientation: str  # "axial" | "sagittal" | "coronal" | "oblique"
    multiframe: bool = False
    localizer: bool = False
    assumed: bool = False  # no positions: slices in instance order on an assumed grid

    @property
    def voxels(self) -> int:
        return self.slices * self.rows * self.columns

    def safe_dict(self) -> dict:
        """The listing without UID or description: safe for lasting records."""
        return {
            "index": self.index,
            "modality": self.modality,
            "slices": self.slices,
            "rows": self.rows,
            "columns": self.columns,
            "spacing_mm": [round(float(s), 4) for s in self.spacing],
            "orientation": self.orientation,
            "multiframe": self.multiframe,
            "geometry": "assumed" if self.assumed else "from the headers",
        }


@dataclass
class Slice:
    """One image plane: where it comes from and where it sits."""

    item: object  # sources.Item
    frame: int | None  # frame index in a multi-frame object, else None
    position: np.ndarray  # ImagePositionPatient
    orientation: np.ndarray  # ImageOrientationPatient (6,)
    spacing: tuple[float, float]
    slope: float
    intercept: float
    #: where the uncompressed pixels sit in the file: (byte offset, numpy dtype
    #: string, unused high bits), or None when they must be decoded by pydicom
    native: tuple | None = None


@dataclass
class Stack:
    """Slices of one series part, sorted along the normal."""

    info: SeriesInfo
    slices: list
    header: dict  # pixel format and modality facts shared by the slices
    warnings: list = field(default_factory=list)


@dataclass
class Listing:
    series: list  # SeriesInfo, index 1..n
    skipped: dict  # kind -> count
    warnings: list
    stacks: dict  # SeriesInfo.index -> Stack
    files: int = 0


@dataclass
class Volume:
    """A series as voxels in modality units with its patient-frame geometry."""

    data: np.ndarray  # (slices, rows, columns), int16 where the data allows, else float32
    positions: np.ndarray  # (slices, 3) float64, ImagePositionPatient per slice, LPS mm
    row_dir: np.ndarray  # (3,) unit vector: direction of increasing column index
    col_dir: np.ndarray  # (3,) unit vector: direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    modality: str = "OT"
    background: float = -1024.0  # value used for padding and for PixelPaddingValue
    info: SeriesInfo | None = None
    warnings: list[str] = field(default_factory=list)
    #: what the region stage did (converter/region.py), for the report; None without one
    region: dict | None = None
    #: summaries the loader computes while each slice is hot, so later stages
    #: need no pass over the voxels: per slice (min, max), and the maximum of
    #: each row and of each column per slice.  None when unknown.
    slice_range: np.ndarray | None = field(default=None, repr=False)
    row_max: np.ndarray | None = field(default=None, repr=False)
    col_max: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.row_dir = np.asarray(self.row_dir, dtype=np.float64)
        self.col_dir = np.asarray(self.col_dir, dtype=np.float64)
        if self.data.ndim != 3:
            raise ValueError(f"volume data must be 3-D, got {self.data.ndim}-D")
        if self.positions.shape != (self.data.shape[0], 3):
            raise ValueError(
                f"positions must have shape ({self.data.shape[0]}, 3), "
                f"got {self.positions.shape}"
            )

    def value_range(self) -> tuple[float, float]:
        """(lowest, highest) voxel value, from the loader's summaries when present."""
        if self.slice_range is not None:
            return float(self.slice_range[:, 0].min()), float(self.slice_range[:, 1].max())
        return float(self.data.min()), float(self.data.max())

    def crossing_box(self, level: float):
        """Per axis, whether each slice / row / column holds a voxel above ``level``
        (from the summaries when present, else one pass over the voxels)."""
        if self.row_max is not None and self.col_max is not None and self.slice_range is not None:
            return [self.slice_range[:, 1] > level, self.row_max.max(axis=0) > level,
                    self.col_max.max(axis=0) > level]
        per_slice = self.data.max(axis=(1, 2)) > level
        plane = self.data.max(axis=0)
        return [per_slice, plane.max(axis=1) > level, plane.max(axis=0) > level]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    def index_to_patient(self, ijk: np.ndarray, offset=None) -> np.ndarray:
        """Map (slice, row, column) indices, fractional allowed, to LPS mm.

        Linear between neighbouring slices, and beyond the first and last
        slice (the pad layer) along the nearest pair; one slice extends
        along its normal.  Runs in the compiled kernel (:mod:`converter._mesh`).

        Parameters
        ----------
        ijk : (N, 3) array_like
            Indices in the order of ``data``'s axes.
        offset : (3,) array_like, optional
            Added to every index first (e.g. where a crop starts).

        Returns
        -------
        (N, 3) float64 array of patient coordinates in millimetres.
        """
        ijk = np.asarray(ijk)
        if ijk.ndim != 2 or ijk.shape[1] != 3:
            raise ValueError(f"ijk must have shape (N, 3), got {ijk.shape}")
        offset = np.zeros(3) if offset is None else np.ascontiguousarray(offset, np.float64)
        if offset.shape != (3,):
            raise ValueError(f"offset must have 3 values, got shape {offset.shape}")
        sr, sc = self.pixel_spacing
        in_plane = np.stack([self.col_dir * sr, self.row_dir * sc])  # rows, columns -> mm
        if self.positions.shape[0] == 1:
            ijk = ijk.astype(np.float64) + offset
            normal = np.cross(self.row_dir, self.col_dir)
            return self.positions[0] + ijk[:, :1] * normal + ijk[:, 1:] @ in_plane
        ijk = np.ascontiguousarray(ijk)
        if ijk.dtype not in (np.float32, np.float64):
            ijk = ijk.astype(np.float64)
        out = np.empty((len(ijk), 3), np.float64)
        _mesh.index_to_patient(ijk, offset, np.ascontiguousarray(self.positions), in_plane, out)
        return out

    def patient_to_index(self, xyz) -> np.ndarray:
        """The inverse of ``index_to_patient``: LPS mm to fractional (slice, row, column).

        The slice index comes from the position along the slice normal
        (linear between slices, extended beyond the ends along the nearest
        pair), the row and column from that slice's interpolated position.

        Parameters
        ----------
        xyz : (N, 3) array_like
            Points in patient mm (LPS).

        Returns
        -------
        (N, 3) float64 array of indices in the order of ``data``'s axes.
        """
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
        normal = np.cross(self.row_dir, self.col_dir)
        normal /= np.linalg.norm(normal) or 1.0
        sr, sc = self.pixel_spacing
        if self.positions.shape[0] == 1:
            k = (xyz - self.positions[0]) @ normal
            origin = self.positions[0] + k[:, None] * normal
        else:
            along = self.positions @ normal
            if along[-1] < along[0]:
                along = -along
                s = -(xyz @ normal)
            else:
                s = xyz @ normal
            k = np.interp(s, along, np.arange(len(along), dtype=np.float64))
            for end, (a, b) in ((s < along[0], (0, 1)), (s > along[-1], (-2, -1))):
                if end.any():  # beyond the ends: along the nearest pair
                    k[end] = (len(along) + a if a < 0 else a) + (s[end] - along[a]) / (
                        along[b] - along[a])
            lo = np.clip(np.floor(k).astype(np.int64), 0, len(along) - 2)
            t = (k - lo)[:, None]
            origin = self.positions[lo] * (1 - t) + self.positions[lo + 1] * t
        d = xyz - origin
        return np.stack([k, d @ self.col_dir / sr, d @ self.row_dir / sc], axis=1)

    def spacing(self) -> tuple[float, float, float]:
        """(slice, row, column) spacing of the voxel grid in mm (slices: the mean gap)."""
        sr, sc = self.pixel_spacing
        if self.positions.shape[0] > 1:
            gap = float(np.linalg.norm(self.positions[-1] - self.positions[0])) / (
                self.positions.shape[0] - 1)
        else:
            gap = min(sr, sc)
        return gap, float(sr), float(sc)

    def handedness(self) -> float:
        """Sign of the index→patient map's Jacobian determinant (+1 or -1).

        Faces extracted in index space must be flipped when it is negative,
        otherwise the mesh would be inside out; vertices are never mirrored.
        """
        if self.positions.shape[0] > 1:
            dk = self.positions[-1] - self.positions[0]
        else:
            dk = np.cross(self.row_dir, self.col_dir)
        sr, sc = self.pixel_spacing
        jac = np.stack([dk, self.col_dir * sr, self.row_dir * sc])
        return float(np.sign(np.linalg.det(jac)))
