"""The region: which voxels above the level are meshed (``--crop``, ``--seed``,
``--keep-parts``/``--largest``, ``--remove-table``, ``--hollow``).

It runs between the level and marching cubes, on the box of voxels the
surface stage extracts from (``sub``: voxel values, the inside is ``sub >
level``).  A voxel it drops is set to the pad value (below the level), so the
surface closes where the region ends and stays a closed 2-manifold; a voxel
it keeps keeps its value, so every surface the data makes stays where the
data puts it.  In order:

1. **crop**: the box between two corners in patient mm; voxels whose centres
   lie outside it go (oblique and tilted series too: each voxel's centre is
   placed by the volume's own map), so the cut lies within a voxel of the box.
2. **table** (CT): the body is the largest part of the voxels above
   ``BODY_HU`` once everything thinner than ``2 * TABLE_MM`` is eroded away (a
   box erosion, per axis in mm); the body region is that part grown back by
   ``TABLE_MM + MARGIN_MM`` with its holes (lungs, airways) filled.  What lies
   outside it — the couch, the head rest, cables — goes.
3. **parts**: connected voxels above the level, 6-connected (voxels sharing
   a face), so each part is one closed surface; ``seed`` keeps the part
   holding a point (a point on its surface, as picked on a preview, finds
   the part in the voxels around it), ``keep_parts`` the N largest.
4. **hollow**: voxels deeper than the wall below the surface go; their
   depth is the distance to the outer surface (the surface of what is left,
   marching cubes' vertices with their normals), measured in mm along the
   normal of the nearest vertex, and the cavity's boundary is placed at the
   wall's depth by giving the voxels around it values linear in that depth.
   The result is two nested surfaces, the inner one facing inwards.

Errors name the problem and what is allowed (codes ``crop_outside``,
``seed_outside``, ``seed_in_background``, ``hollow_too_thick``; ``no_surface``
when nothing is left).
"""

from __future__ import annotations

import numpy as np

from . import _shape
from .errors import NoUsableSeries, UsageError
from .mesh import _index_array

#: the lowest value of the body in HU: above air and lung, below fat and skin
BODY_HU = -500.0
#: structures thinner than twice this are not the body (the couch's shells, the head rest)
TABLE_MM = 5.0
#: how far beyond the eroded body's regrown surface the body still reaches
MARGIN_MM = 2.0
#: the body is found on a grid about this fine (every k-th voxel where they are finer)
BODY_GRID_MM = 1.5
#: hollow: cavities of fewer voxels are filled back (too small to matter or to mesh well)
MIN_CAVITY_VOXELS = 64
#: hollow: values around the cavity's boundary change by this much per mm of depth
_PER_MM = 10.0


def wanted(opts) -> bool:
    """Whether any region option is given."""
    return (opts.crop is not None or opts.seed is not None or bool(opts.remove_table)
            or opts.keep_parts is not None or bool(opts.largest) or opts.hollow is not None)


def to_lps(points, frame):
    """Points given in the output frame as LPS (RAS: x and y turned; other frames are LPS)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if frame == "ras":
        return points * np.array([-1.0, -1.0, 1.0])
    return points


def _extent(vol):
    """The volume's voxel centres' bounds in LPS mm, for messages."""
    n = np.array(vol.shape) - 1
    corners = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])],
                       dtype=np.float64)
    xyz = vol.index_to_patient(corners)
    return xyz.min(axis=0), xyz.max(axis=0)


def _box_text(lo, hi):
    return ", ".join(f"{a:.1f} to {b:.1f}" for a, b in zip(lo, hi, strict=True))


class Region:
    """The region options of one conversion, applied to the box the surface comes from.

    Parameters
    ----------
    vol : converter.volume.Volume
    opts : converter.options.ConvertOptions
        Checked options; crop and seed in the output frame (``opts.frame``).
    """

    def __init__(self, vol, opts):
        self.vol, self.opts = vol, opts
        self.facts: dict = {}
        self.warnings: list = []
        self.crop = None
        if opts.crop is not None:
            corners = to_lps(opts.crop, opts.frame)
            self.crop = (corners.min(axis=0), corners.max(axis=0))
            self.facts["crop_mm"] = [v.round(3).tolist() for v in self.crop]
        self.seed = None
        if opts.seed is not None:
            self.seed = to_lps(opts.seed, opts.frame)[0]
            self.facts["seed_mm"] = self.seed.round(3).tolist()
            self._seed_index()

    # ------------------------------------------------------------------ boxes
    def narrow(self, box):
        """``box`` (per axis ``(lo, hi)`` voxel indices) narrowed to the crop box.

        Raises ``UsageError`` (``crop_outside``) when the crop box holds no
        voxel centre, ``NoUsableSeries`` (``no_surface``) when no voxel
        above the level lies in it.
        """
        if self.crop is None:
            return box
        lo, hi = self.crop
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        ijk = self.vol.patient_to_index(corners)
        first = np.ceil(ijk.min(axis=0) - 1e-6).astype(np.int64)
        last = np.floor(ijk.max(axis=0) + 1e-6).astype(np.int64)
        shape = self.vol.shape
        if any(f > min(la, n - 1) or la < max(f, 0) for f, la, n in zip(first, last, shape, strict=True)):
            raise UsageError(
                f"the crop box ({_box_text(lo, hi)} mm, LPS) holds no voxel of the volume, "
                f"whose voxels lie within {_box_text(*_extent(self.vol))} mm (LPS)",
                code="crop_outside")
        out = []
        for (a, b), f, la in zip(box, first, last, strict=True):
            a, b = max(a, int(f)), min(b, int(la) + 1)
            if a >= b:
                raise NoUsableSeries("nothing above the level lies inside the crop box",
                                     code="no_surface")
            out.append((a, b))
        return out

    def _seed_index(self):
        ijk = self.vol.patient_to_index(self.seed[None])[0]
        shape = np.array(self.vol.shape)
        if np.any(ijk < -0.5) or np.any(ijk > shape - 0.5):
            raise UsageError(
                f"the seed ({', '.join(f'{v:.1f}' for v in self.seed)} mm, LPS) lies outside "
                f"the volume, whose voxels lie within {_box_text(*_extent(self.vol))} mm (LPS)",
                code="seed_outside")
        self.seed_ijk = ijk

    # ------------------------------------------------------------------ apply
    def apply(self, sub, level, pad_value, offset, *, workers=1):
        """Drop from ``sub`` (in place where it can) what the region leaves out.

        Parameters
        ----------
        sub : (Z, Y, X) ndarray
            The box's values (the inside is ``sub > level``); changed in place
            unless hollowing needs floats.
        level, pad_value : float
        offset : (3,) ints
            Where ``sub`` starts in the volume.

        Returns
        -------
        ndarray
            The values to extract the surface from (``sub`` or a float copy).
        """
        offset = np.asarray(offset, dtype=np.int64)
        if self.opts.remove_table:  # first: it reads the scan's own values
            box = [(int(a), int(a) + n) for a, n in zip(offset, sub.shape, strict=True)]
            self._remove_table(sub, level, pad_value, box)
        if self.crop is not None:
            self._apply_crop(sub, pad_value, offset)
        if self.seed is not None or self.opts.keep_parts is not None or self.opts.largest:
            self._keep_parts(sub, level, pad_value, offset)
        if not (sub > level).any():
            raise NoUsableSeries("nothing above the level is left in the region",
                                 code="no_surface")
        if self.opts.hollow is not None:
            sub = self._hollow(sub, level, pad_value, offset, workers)
        return sub

    def _centres(self, k, offset, ny, nx):
        """Patient coordinates of the voxel centres of the box's plane ``k``: (ny, nx, 3)."""
        r, c = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64),
                           indexing="ij")
        ijk = np.stack([np.full(r.size, float(k)), r.ravel(), c.ravel()], axis=1)
        return self.vol.index_to_patient(ijk, offset).reshape(ny, nx, 3)

    def _apply_crop(self, sub, pad_value, offset):
        lo, hi = self.crop
        nz, ny, nx = sub.shape
        for k in range(nz):
            xyz = self._centres(k, offset, ny, nx)
            outside = ((xyz < lo - 1e-6) | (xyz > hi + 1e-6)).any(axis=2)
            sub[k][outside] = pad_value

    def _grid_mm(self):
        return self.vol.spacing()

    def _axial_axis(self):
        """The axis of ``data`` most along the patient's z (feet to head)."""
        vol = self.vol
        normal = np.cross(vol.row_dir, vol.col_dir)
        return int(np.argmax(np.abs([normal[2], vol.col_dir[2], vol.row_dir[2]])))

    def _remove_table(self, sub, level, pad_value, box):
        import cc3d
        from scipy import ndimage

        if self.vol.modality != "CT":
            self.warnings.append("remove_table is for CT (it finds the body in HU); this "
                                 "series is not CT, so nothing was removed")
            return
        spacing = self._grid_mm()
        axial = self._axial_axis()
        # the body: the whole scan's voxels above BODY_HU (the body is bigger than the box)
        # on a grid of about BODY_GRID_MM, each axial plane's holes (lungs, airways,
        # bowel) filled
        step = [max(1, int(BODY_GRID_MM // s)) for s in spacing]
        spacing = [s * k for s, k in zip(spacing, step, strict=True)]
        coarse = self.vol.data[::step[0], ::step[1], ::step[2]] > BODY_HU
        core = _fill_holes_in_planes(coarse, axial).view(np.uint8)
        for axis, s in enumerate(spacing):  # a box erosion; the scan's faces are not its edge
            core = ndimage.minimum_filter1d(core, 2 * _voxels(TABLE_MM, s) + 1, axis=axis,
                                            mode="nearest")
        if not core.any():
            self.warnings.append("remove_table found no body thicker than "
                                 f"{2 * TABLE_MM:g} mm; nothing was removed")
            return
        core = (cc3d.largest_k(core, k=1, connectivity=6, binary_image=True) > 0).view(np.uint8)
        # the box's voxels on the coarse grid
        crop = np.ix_(*[np.minimum(np.arange(a, b) // k, n - 1)
                        for (a, b), k, n in zip(box, step, core.shape, strict=True)])
        margin = core
        for axis, s in enumerate(spacing):  # grown back, and a margin beyond
            margin = ndimage.maximum_filter1d(margin, 2 * _voxels(TABLE_MM + MARGIN_MM, s) + 1,
                                              axis=axis, mode="constant")
        margin = margin.view(bool)[crop]
        core = core.view(bool)[crop]
        inside = sub > level
        # what stays: the level's voxels in the margin connected to a voxel deep in the
        # body (a bone, the skin, the airways), not a couch touching the body's back
        near = inside & margin
        labels = cc3d.connected_components(near, connectivity=6)
        deep = np.zeros(int(labels.max()) + 1, bool)
        deep[np.unique(labels[near & core])] = True
        deep[0] = False
        drop = inside & ~deep[labels]
        del labels, near, core, margin
        removed = int(np.count_nonzero(drop))
        sub[drop] = pad_value
        self.facts["table_removed_mm3"] = round(removed * float(np.prod(self._grid_mm())), 1)

    def _keep_parts(self, sub, level, pad_value, offset):
        import cc3d

        inside = sub > level
        labels, count = cc3d.connected_components(inside, connectivity=6, return_N=True)
        self.facts["parts_found"] = int(count)
        if self.seed is not None:
            label = self._seed_label(labels, inside, offset)
            keep = labels == label
            self.facts["parts_kept"] = 1
        else:
            k = self.opts.keep_parts or 1
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            largest = np.argsort(-sizes[1:], kind="stable")[:k] + 1
            lut = np.zeros(len(sizes), bool)
            lut[largest] = True
            keep = lut[labels]
            self.facts["parts_kept"] = int(min(k, count))
        del labels
        sub[inside & ~keep] = pad_value

    def _seed_label(self, labels, inside, offset):
        """The label of the part holding the seed (or, for a point on a surface,
        of the nearest voxel above the level around it)."""
        local = self.seed_ijk - offset
        centre = np.round(local).astype(np.int64)
        best, best_d = 0, np.inf
        spacing = np.array(self._grid_mm())
        for d in np.array(np.meshgrid([0, -1, 1], [0, -1, 1], [0, -1, 1], indexing="ij")).reshape(3, -1).T:
            at = centre + d
            if np.any(at < 0) or np.any(at >= labels.shape) or not inside[tuple(at)]:
                continue
            dist = float(np.linalg.norm((at - local) * spacing))
            if dist < best_d:
                best, best_d = int(labels[tuple(at)]), dist
        if best == 0:
            raise UsageError(
                f"the seed ({', '.join(f'{v:.1f}' for v in self.seed)} mm, LPS) lies in the "
                "background: no voxel above the level is within one voxel of it (pick a point "
                "on or inside the part)", code="seed_in_background")
        return best

    def _hollow(self, sub, level, pad_value, offset, workers):
        import cc3d
        import edt
        from scipy.spatial import cKDTree

        from .marching import marching_cubes

        wall = float(self.opts.hollow)
        spacing = self._grid_mm()
        smax = max(spacing)
        inside = sub > level
        depth = edt.edt(inside, anisotropy=spacing, black_border=True, parallel=workers)
        deepest = float(depth.max())  # a voxel centre's distance to the nearest outside one
        if deepest <= wall:  # the surface lies nearer still
            raise UsageError(
                f"a wall of {wall:g} mm is thicker than the part: no voxel lies deeper than "
                f"{deepest:.1f} mm inside it (hollow must be less than that)",
                code="hollow_too_thick")
        # the outer surface: marching cubes' vertices and normals, in patient mm
        verts, faces = marching_cubes(sub, level, pad=pad_value, workers=workers)
        verts = self.vol.index_to_patient(verts, offset)
        normals = _shape.normals_and_areas(verts, _index_array(faces))[0]
        del faces
        band = inside & (depth >= wall - smax) & (depth <= wall + 2 * smax)
        deep = inside & (depth > wall + 2 * smax)
        del depth, inside
        where = np.nonzero(band)
        del band
        points = self.vol.index_to_patient(np.stack(where, axis=1).astype(np.float64), offset)
        tree = cKDTree(verts, balanced_tree=False, compact_nodes=False)
        euclid, nearest = tree.query(points, workers=workers, distance_upper_bound=wall + 4 * smax)
        del tree
        far = ~np.isfinite(euclid)  # beyond the bound: certainly deeper than the wall
        euclid[far], nearest[far] = wall + 4 * smax, 0
        along = np.abs(np.einsum("ij,ij->i", points - verts[nearest], normals[nearest]))
        del points, verts, normals
        true_depth = np.clip(along, euclid - smax, euclid)
        if not deep.any() and not (true_depth > wall).any():
            raise UsageError(
                f"a wall of {wall:g} mm is thicker than the part: no voxel lies deeper than "
                f"{wall:g} mm inside it (hollow must be less than {true_depth.max():.1f})",
                code="hollow_too_thick")
        out = sub.astype(np.float32)
        out[deep] = pad_value
        # only voxels within a voxel of the wall's depth (an edge crossing the cavity's
        # boundary joins two of them); nearer the outside, the data's values stay
        near = true_depth > wall - smax
        where = tuple(w[near] for w in where)
        out[where] = np.minimum(out[where], level + _PER_MM * (wall - true_depth[near]))
        del where, deep
        cavities = (out <= level) & (sub > level)
        labels, count = cc3d.connected_components(cavities, connectivity=6, return_N=True)
        del cavities
        small = np.bincount(labels.ravel(), minlength=count + 1) < MIN_CAVITY_VOXELS
        small[0] = False
        refill = small[labels]
        del labels
        out[refill] = sub[refill]
        if small[1:].all():
            raise UsageError(
                f"a wall of {wall:g} mm leaves no cavity of {MIN_CAVITY_VOXELS} voxels or "
                "more: the part is too thin to hollow (give a thinner wall)",
                code="hollow_too_thick")
        self.facts["cavities"] = int(count - small[1:].sum())
        self.facts["hollow_wall_mm"] = wall
        return out

    def report(self) -> dict:
        """What the region did, for the report (JSON-safe)."""
        return dict(self.facts)


def _voxels(mm, spacing):
    """How many voxels of ``spacing`` make ``mm`` (at least one)."""
    return max(1, int(round(mm / spacing)))


def _fill_holes_in_planes(mask, axis):
    """``mask`` with the holes of each plane across ``axis`` filled (in place): what
    a plane's edge cannot reach, 4-connected, is inside (lungs, airways, bowel)."""
    import cc3d

    planes = np.moveaxis(mask, axis, 0)
    for plane in planes:
        labels = cc3d.connected_components(~plane, connectivity=4)
        edge = np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()])
        hole = np.ones(int(labels.max()) + 1, bool)
        hole[edge] = False
        plane |= hole[labels]  # label 0 is the mask itself
    return mask
