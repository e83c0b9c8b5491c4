"""Generate DICOM series of analytic phantoms for tests.

A phantom is a shape defined in the patient frame (LPS, millimetres) by a
signed distance (positive inside).  ``render`` samples it at every voxel's
patient position for any geometry (orientation, gantry tilt, non-uniform
slice spacing) with a linear partial-volume ramp two voxels wide, so the
surface at the midpoint isovalue is exact for planar faces and within a tiny
fraction of a voxel for curved ones.  The truth (volume, centroid, bounding
box) is known analytically, so the converter's output can be checked in mm.

``write_series`` writes a real DICOM series (one file per slice) with canary
values where asked, so privacy tests can search every sink for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from converter.sample import new_dataset

FG_HU = 1000
BG_HU = -1000
MID_HU = (FG_HU + BG_HU) / 2  # the exact isovalue


# --------------------------------------------------------------------------- phantoms


@dataclass
class Phantom:
    name: str
    volume: float  # mm^3
    centroid: np.ndarray  # (3,) LPS mm
    bbox: np.ndarray  # (2, 3) LPS mm
    _sd: object = field(repr=False, default=None)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return self._sd(points)


def sphere(center=(0.0, 0.0, 0.0), radius=12.0) -> Phantom:
    c = np.asarray(center, float)

    def sd(p):
        return radius - np.linalg.norm(p - c, axis=-1)

    return Phantom("sphere", 4 / 3 * np.pi * radius**3, c, np.array([c - radius, c + radius]), sd)


def box(lo=(-10.0, -8.0, -6.0), hi=(10.0, 8.0, 6.0)) -> Phantom:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)

    def sd(p):
        return np.min(np.minimum(p - lo, hi - p), axis=-1)

    return Phantom("box", float(np.prod(hi - lo)), (lo + hi) / 2, np.array([lo, hi]), sd)


def l_shape(origin=(-16.0, -12.0, -6.0), length=(32.0, 22.0), bar=10.0, thickness=12.0) -> Phantom:
    """An asymmetric L: a long bar along +x and a shorter bar along +y.

    Mirroring along any axis moves its centroid, so it catches flipped meshes.
    """
    o = np.asarray(origin, float)
    lx, ly = length
    a = box(o, o + (lx, bar, thickness))  # long bar along x
    b = box(o, o + (bar, ly, thickness))  # short bar along y
    va, vb, vab = lx * bar * thickness, bar * ly * thickness, bar * bar * thickness
    cab = o + (bar / 2, bar / 2, thickness / 2)
    vol = va + vb - vab
    cen = (va * a.centroid + vb * b.centroid - vab * cab) / vol

    def sd(p):
        return np.maximum(a.signed_distance(p), b.signed_distance(p))

    return Phantom("l_shape", float(vol), cen, np.array([o, o + (lx, ly, thickness)]), sd)


def cylinder(center=(0.0, 0.0, 0.0), axis=(0.0, 0.0, 1.0), radius=10.0, length=30.0) -> Phantom:
    """A capped cylinder; its signed distance is exact (the rims included)."""
    c, ax = np.asarray(center, float), _unit(axis)
    half = length / 2

    def sd(p):
        q = p - c
        along = q @ ax
        across = np.linalg.norm(q - along[..., None] * ax, axis=-1)
        dr, dz = across - radius, np.abs(along) - half
        outside = np.hypot(np.maximum(dr, 0), np.maximum(dz, 0))
        return -(outside + np.minimum(np.maximum(dr, dz), 0))

    # the box around the caps' rims: each cap is a disc of the radius across the axis
    extent = half * np.abs(ax) + radius * np.sqrt(np.clip(1 - ax**2, 0, 1))
    return Phantom("cylinder", np.pi * radius**2 * length, c, np.array([c - extent, c + extent]),
                   sd)


def two_spheres(gap=6.0) -> Phantom:
    """Two spheres, one big one small, for component/island tests."""
    big, small = sphere((-8.0, 0, 0), 9.0), sphere((12.0, 0, 0), 4.0)

    def sd(p):
        return np.maximum(big.signed_distance(p), small.signed_distance(p))

    vol = big.volume + small.volume
    cen = (big.volume * big.centroid + small.volume * small.centroid) / vol
    bb = np.array([np.minimum(big.bbox[0], small.bbox[0]), np.maximum(big.bbox[1], small.bbox[1])])
    return Phantom("two_spheres", vol, cen, bb, sd)


# --------------------------------------------------------------------------- geometry


@dataclass
class Geometry:
    """Where each voxel of a (slices, rows, columns) grid sits in LPS mm."""

    shape: tuple[int, int, int]
    positions: np.ndarray  # (slices, 3) ImagePositionPatient
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index
    spacing: tuple[float, float]  # (between rows, between columns)

    def points(self, k: int) -> np.ndarray:
        """Patient positions of every voxel of slice ``k``: (rows, columns, 3)."""
        rows, cols = self.shape[1:]
        sr, sc = self.spacing
        r = np.arange(rows)[:, None, None] * sr * self.col_dir
        c = np.arange(cols)[None, :, None] * sc * self.row_dir
        return self.positions[k] + r + c

    @property
    def max_step(self) -> float:
        gaps = np.linalg.norm(np.diff(self.positions, axis=0), axis=1)
        return float(max(self.spacing[0], self.spacing[1], gaps.max() if len(gaps) else 0))


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


ORIENTATIONS = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
}


def rotation_x(deg: float) -> np.ndarray:
    t = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def make_geometry(
    orientation="axial",
    *,
    size=(40, 48, 48),
    spacing=(1.0, 1.0),
    slice_gaps=None,
    tilt_deg=0.0,
    oblique_deg=0.0,
    center=(0.0, 0.0, 0.0),
) -> Geometry:
    """A grid of ``size`` (slices, rows, columns) centred on ``center``.

    ``slice_gaps``: a scalar or a list of ``slices - 1`` gaps along the slice
    normal (mm).  ``tilt_deg``: gantry tilt — each slice is shifted along the
    column direction by ``gap * tan(tilt)`` (orientation unchanged, as a
    tilted CT writes it).  ``oblique_deg``: rotate the orientation about x.
    """
    n, rows, cols = size
    row_dir, col_dir = (_unit(v) for v in ORIENTATIONS[orientation])
    if oblique_deg:
        rot = rotation_x(oblique_deg)
        row_dir, col_dir = rot @ row_dir, rot @ col_dir
    normal = np.cross(row_dir, col_dir)
    if slice_gaps is None:
        slice_gaps = 1.0
    gaps = np.broadcast_to(np.asarray(slice_gaps, float), (n - 1,))
    along = np.concatenate([[0.0], np.cumsum(gaps)])
    shift = along * np.tan(np.radians(tilt_deg))
    sr, sc = spacing
    # centre the grid on `center`
    half = (cols - 1) * sc / 2 * row_dir + (rows - 1) * sr / 2 * col_dir
    half = half + along[-1] / 2 * normal + shift[-1] / 2 * col_dir
    origin = np.asarray(center, float) - half
    positions = origin + along[:, None] * normal + shift[:, None] * col_dir
    return Geometry((n, rows, cols), positions, row_dir, col_dir, (float(sr), float(sc)))


def render(phantom: Phantom, geometry: Geometry, fg=FG_HU, bg=BG_HU, width=None) -> np.ndarray:
    """Sample ``phantom`` on ``geometry``: int16 HU with a linear ramp ``width`` mm
    wide (default: 2 voxels of the largest spacing).  A ramp one pixel wide
    on thick slices leaves marching cubes' terraces between the slices."""
    width = 2.0 * geometry.max_step if width is None else float(width)
    out = np.empty(geometry.shape, np.int16)
    for k in range(geometry.shape[0]):
        sd = phantom.signed_distance(geometry.points(k))
        frac = np.clip(0.5 + sd / width, 0.0, 1.0)
        out[k] = np.rint(bg + (fg - bg) * frac)
    return out


# --------------------------------------------------------------------------- writing


def write_series(
    directory,
    volume,
    *,
    spacing=(1.0, 1.0),
    slice_positions=None,
    row_dir=(1, 0, 0),
    col_dir=(0, 1, 0),
    geometry: Geometry | None = None,
    modality="CT",
    names="index",
    patient_name="ANON^PHANTOM",
    patient_id="PHANTOM-0",
    study_uid=None,
    series_uid=None,
    sop_uid_prefix=None,
    series_number=1,
    series_description="phantom",
    private_value=None,
    preamble=True,
    transfer_syntax=ExplicitVRLittleEndian,
    rescale=(1.0, -1024.0),
    pixel_padding_value=None,
    extra=None,
    seed=0,
) -> list[Path]:
    """Write ``volume`` (slices, rows, columns; modality units) as one file per slice.

    Parameters
    ----------
    directory : path
        Created if missing.
    volume : ndarray
        Values in modality units (HU for CT); stored as ``(value - intercept) / slope``.
    geometry : Geometry, optional
        Overrides ``spacing``, ``slice_positions``, ``row_dir``, ``col_dir``.
    names : {"index", "shuffled-noext"}
        ``index``: ``slice0000.dcm``…; ``shuffled-noext``: random names without
        extension, written in shuffled order.
    patient_name, patient_id, study_uid, series_uid, private_value,
    series_description : canary carriers for privacy tests.
    preamble : bool
        False writes the dataset without the 128-byte preamble and "DICM".
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    volume = np.asarray(volume)
    n, rows, cols = volume.shape
    if geometry is not None:
        spacing, slice_positions = geometry.spacing, geometry.positions
        row_dir, col_dir = geometry.row_dir, geometry.col_dir
    row_dir, col_dir = _unit(row_dir), _unit(col_dir)
    if slice_positions is None:
        normal = np.cross(row_dir, col_dir)
        slice_positions = np.arange(n)[:, None] * normal
    slice_positions = np.asarray(slice_positions, float)
    slope, intercept = rescale
    stored = np.rint((volume.astype(np.float64) - intercept) / slope)
    signed = stored.min() < 0
    dtype = np.int16 if signed else np.uint16
    stored = stored.astype(dtype)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    rng = random.Random(seed)
    order = list(range(n))
    if names == "shuffled-noext":
        rng.shuffle(order)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    for k in order:
        sop_uid = (sop_uid_prefix + f".{k + 1}") if sop_uid_prefix else generate_uid()
        ds = new_dataset(sop_class, transfer_syntax=transfer_syntax, instance_uid=sop_uid)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.Modality = modality
        ds.SeriesNumber = series_number
        # InstanceNumber deliberately reversed: sorting must not use it.
        ds.InstanceNumber = n - k
        ds.SeriesDescription = series_description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in slice_positions[k]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[0]:.6f}", f"{spacing[1]:.6f}"]
        ds.SliceThickness = "1.0"
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        if modality == "CT":
            ds.RescaleType = "HU"
        if pixel_padding_value is not None:
            ds.PixelPaddingValue = int(pixel_padding_value)
        if private_value is not None:
            block = ds.private_block(0x0011, "EPHEMESH TEST", create=True)
            block.add_new(0x01, "LO", private_value)
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = stored[k].tobytes()
        if transfer_syntax == ExplicitVRBigEndian:  # the words too are big endian
            ds.PixelData = stored[k].astype(stored.dtype.newbyteorder(">")).tobytes()
        elif transfer_syntax != ExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(transfer_syntax) if _is_compressed(transfer_syntax) else None
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        if names == "index":
            path = directory / f"slice{k:04d}.dcm"
        else:
            path = directory / f"{rng.getrandbits(64):016x}"
        if transfer_syntax == ExplicitVRBigEndian:
            from pydicom.filewriter import dcmwrite

            dcmwrite(path, ds, implicit_vr=False, little_endian=False,
                     enforce_file_format=preamble)
        else:
            ds.save_as(path, enforce_file_format=preamble)
        if not preamble:
            _strip_preamble(path)
        paths.append(path)
    return paths


def _is_compressed(ts) -> bool:
    return pydicom.uid.UID(ts).is_compressed


def _strip_preamble(path: Path) -> None:
    """Rewrite ``path`` as a bare dataset (no preamble, no "DICM", no meta)."""
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    dcmwrite(path, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    raw = path.read_bytes()
    assert raw[128:132] != b"DICM"


def write_enhanced(path, volume, geometry: Geometry, *, transfer_syntax=ExplicitVRLittleEndian,
                   rescale=(1.0, -1024.0), seed=0, patient_name="ANON^PHANTOM") -> Path:
    """Write ``volume`` as one Enhanced CT object with per-frame functional groups.

    Frames are stored in shuffled order (their positions say where they go);
    orientation, pixel spacing and rescale sit in the shared groups.
    """
    path = Path(path)
    n, rows, cols = volume.shape
    slope, intercept = rescale
    stored = np.rint((np.asarray(volume, np.float64) - intercept) / slope).astype(np.uint16)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    sop_class = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds = new_dataset(sop_class)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality, ds.SeriesNumber = patient_name, "PH", "CT", 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    po, pm, pv = Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = [f"{v:.8f}" for v in (*geometry.row_dir, *geometry.col_dir)]
    pm.PixelSpacing = [f"{geometry.spacing[0]:.6f}", f"{geometry.spacing[1]:.6f}"]
    pm.SliceThickness = "1.0"
    pv.RescaleSlope, pv.RescaleIntercept, pv.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PixelValueTransformationSequence = Sequence([pv])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        fg, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [f"{v:.6f}" for v in geometry.positions[k]]
        fg.PlanePositionSequence = Sequence([pp])
        frames.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = stored[order].tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- conveniences


def sphere_volume(size=(40, 48, 48), radius=12.0) -> tuple[np.ndarray, Geometry]:
    geo = make_geometry("axial", size=size)
    return render(sphere(radius=radius), geo), geo


def make_series_dir(directory, kind="sphere", *, size=(32, 40, 40), names="index", **kw) -> Path:
    """A small valid axial CT series of ``kind`` (sphere, box, l_shape, two_spheres)."""
    phantom = {"sphere": sphere, "box": box, "l_shape": l_shape, "two_spheres": two_spheres}[kind]()
    geo = make_geometry("axial", size=size, spacing=(1.0, 1.0))
    write_series(directory, render(phantom, geo), geometry=geo, names=names, **kw)
    return Path(directory)


def write_phantom_series(directory, phantom: Phantom, geometry: Geometry, **kw) -> list[Path]:
    return write_series(directory, render(phantom, geometry), geometry=geometry, **kw)


# --------------------------------------------------------------------------- a body on a table

def _cylinder(center_xy, radii_xy, z_range=(-1e9, 1e9)):
    """An elliptic cylinder along z (signed distance approximated by the ellipse's scale)."""
    cx, cy = center_xy
    ax, ay = radii_xy
    z0, z1 = z_range

    def sd(p):
        q = np.hypot((p[..., 0] - cx) / ax, (p[..., 1] - cy) / ay)
        radial = (1.0 - q) * min(ax, ay)
        return np.minimum(radial, np.minimum(p[..., 2] - z0, z1 - p[..., 2]))

    return sd


def body_on_table(geometry: Geometry, *, table_hu=1200.0) -> np.ndarray:
    """A CT of a body lying on a couch, with a head rest: HU, int16.

    The body (soft tissue, 40 HU) is an elliptic cylinder around the z axis
    (half-widths 40 and 25 mm; posterior is +y in LPS) holding a bone (700
    HU, the spine: radius 6 mm at y = 12) and two lungs (-850 HU, 18 by 16
    mm, at x = ±16) that end 8 mm inside the first and last slices.  Under it lies the couch: a shell
    4 mm thick, curved up at the sides (its top y = 25 - x²/400) and wider
    than the body, touching the body's back.  Over the top third of the
    slices a head rest cradles the body: a U of 4 mm walls (|x| from 43 to 47
    mm) rising from the couch to y = 0.  Couch and head rest are ``table_hu``
    (denser than the bone level, as real couches' carbon fibre and rails can
    be).
    """
    z = geometry.points(0)[..., 2].ravel()
    z_lo = min(geometry.positions[:, 2].min(), z.min())
    z_hi = max(geometry.positions[:, 2].max(), z.max())
    body = _cylinder((0.0, 0.0), (40.0, 25.0))
    spine = _cylinder((0.0, 12.0), (6.0, 6.0))
    lungs = [_cylinder((x, -3.0), (9.0, 8.0), (z_lo + 8.0, z_hi - 8.0)) for x in (-16.0, 16.0)]
    z_head = z_hi - (z_hi - z_lo) / 3

    def couch(p):
        top = 28.0 - p[..., 0] ** 2 / 400.0
        shell = np.minimum(p[..., 1] - top, top + 4.0 - p[..., 1])
        return np.minimum(shell, 60.0 - np.abs(p[..., 0]))

    def headrest(p):
        wall = np.minimum(np.abs(p[..., 0]) - 43.0, 47.0 - np.abs(p[..., 0]))
        height = np.minimum(p[..., 1], 29.0 - p[..., 0] ** 2 / 400.0 - p[..., 1])
        return np.minimum(np.minimum(wall, height), p[..., 2] - z_head)

    width = 2.0 * geometry.max_step
    out = np.empty(geometry.shape, np.int16)
    for k in range(geometry.shape[0]):
        p = geometry.points(k)
        hu = np.full(p.shape[:2], -1000.0)
        for sd, value in [(body, 40.0), *[(lung, -850.0) for lung in lungs], (spine, 700.0),
                          (couch, table_hu), (headrest, table_hu)]:
            frac = np.clip(0.5 + sd(p) / width, 0.0, 1.0)
            hu = hu * (1 - frac) + value * frac
        out[k] = np.rint(hu)
    return out


def slab_of(name, directory, slices=8, gap=2.0) -> Path:
    """A pydicom(-data) CT or MR slice repeated along its normal: a short scan of it."""
    from pydicom.data import get_testdata_file

    source = pydicom.dcmread(get_testdata_file(name))
    ori = np.array([float(v) for v in source.ImageOrientationPatient])
    normal = np.cross(ori[:3], ori[3:])
    start = np.array([float(v) for v in source.ImagePositionPatient])
    series = generate_uid()
    directory = Path(directory)
    for k in range(slices):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.ImagePositionPatient = [f"{v:.4f}" for v in start + k * gap * normal]
        ds.save_as(directory / f"{k:03d}.dcm")
    return directory
