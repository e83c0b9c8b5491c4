"""Marching-cubes lookup tables, derived in code and stored in ``_marching_tables.npz``.

Corner ``i`` of a cell sits at offset ``(i >> 2 & 1, i >> 1 & 1, i & 1)``
along the array axes (0, 1, 2); bit ``i`` of a cell's configuration is set
when that corner is inside (value > level).

The triangulation of each of the 256 configurations is built from the cell's
faces: on every face, the crossed edges are joined by segments.  A face with
two diagonal corners inside is *ambiguous*: the asymptotic decider (the sign
of the bilinear saddle, computed from the data) says whether its inside
corners are joined or separated, and the table holds a triangulation for
every combination of decisions (256 × 64).  A decision looks at the face's
own four values alone, so two cells sharing a face always cut it the same
way and the mesh is watertight.  Each segment is oriented with the inside on
its left seen from outside the cell, which chains the segments of a cell into
consistently wound loops; each loop is fanned into triangles.  The winding is
chosen so that normals point from inside to outside.

The small per-edge and per-face tables are computed at import; the triangle
table is loaded from the stored file, which ``python -m
converter._marching_tables`` writes with :func:`_build` (a test derives it
again and compares).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


def _corner(i):
    return np.array([(i >> 2) & 1, (i >> 1) & 1, i & 1], dtype=np.float64)


# the 12 edges: (corner a, corner b, axis) with b = a + unit step along axis
EDGES = []
for _axis in range(3):
    _bit = 1 << (2 - _axis)
    for _a in range(8):
        if not _a & _bit:
            EDGES.append((_a, _a | _bit, _axis))
EDGE_INDEX = {(a, b): k for k, (a, b, _) in enumerate(EDGES)}
EDGE_INDEX.update({(b, a): k for (a, b), k in list(EDGE_INDEX.items())})
CENTRE = 12  # local id of the extra vertex inside a cell
#: per local edge, then for the extra vertex (``CENTRE``): the offset of its
#: base corner (axis 0, 1, 2) and its axis (3 for the extra vertex)
EDGE_BASE = np.array([_corner(a) for a, _, _ in EDGES] + [[0, 0, 0]], dtype=np.int64)
EDGE_AXIS = np.array([axis for _, _, axis in EDGES] + [3], dtype=np.int64)


def _faces():
    """The 6 faces: (corners in cyclic order, outward normal)."""
    faces = []
    for axis in range(3):
        bit = 1 << (2 - axis)
        others = [1 << (2 - a) for a in range(3) if a != axis]
        for side in (0, 1):
            base = bit if side else 0
            u, v = others
            cycle = [base, base | u, base | u | v, base | v]
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0
            faces.append((cycle, normal))
    return faces


@functools.cache
def _edge_mid(k):
    a, b, _ = EDGES[k]
    return (_corner(a) + _corner(b)) / 2


FACES = _faces()
#: per face: its 4 corners in cyclic order
FACE_CORNERS = np.array([cycle for cycle, _ in FACES], dtype=np.int64)


def _ambiguous(config, face):
    cycle = FACES[face][0]
    bits = [(config >> c) & 1 for c in cycle]
    return bits in ([1, 0, 1, 0], [0, 1, 0, 1])


#: per configuration: bit f set when face f is ambiguous
AMBIGUOUS = np.array([sum(1 << f for f in range(6) if _ambiguous(c, f)) for c in range(256)],
                     dtype=np.int64)


def _segments(config, joined=0):
    """Directed segments (edge k -> edge m) over all faces of a cell.

    ``joined``: bit f set when ambiguous face f joins its inside corners.
    """
    inside = [(config >> i) & 1 for i in range(8)]
    segs = []
    for f, (cycle, normal) in enumerate(FACES):
        crossed = [(cycle[j], cycle[(j + 1) % 4]) for j in range(4)
                   if inside[cycle[j]] != inside[cycle[(j + 1) % 4]]]
        if not crossed:
            continue
        ins = [c for c in cycle if inside[c]]
        if len(crossed) == 2:
            pairs = [(crossed, ins)]
        elif (joined >> f) & 1:  # ambiguous, joined: cut off each outside corner
            pairs = []
            for c in (c for c in cycle if not inside[c]):
                j = cycle.index(c)
                around = [(cycle[j - 1], c), (c, cycle[(j + 1) % 4])]
                pairs.append((around, ins))
        else:  # ambiguous, separated: cut off each inside corner on its own
            pairs = []
            for c in ins:
                j = cycle.index(c)
                around = [(cycle[j - 1], c), (c, cycle[(j + 1) % 4])]
                pairs.append((around, [c]))
        for (e1, e2), corners in pairs:
            k, m = EDGE_INDEX[e1], EDGE_INDEX[e2]
            p, q = _edge_mid(k), _edge_mid(m)
            centre = np.mean([_corner(c) for c in corners], axis=0)
            if np.dot(np.cross(q - p, centre - p), normal) < 0:
                k, m = m, k
            segs.append((k, m))
    return segs


def _loops(config, joined=0):
    nxt = {}
    for k, m in _segments(config, joined):
        assert k not in nxt, "each crossed edge starts exactly one segment"
        nxt[k] = m
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, k = [], start
        while k not in seen:
            seen.add(k)
            loop.append(k)
            k = nxt[k]
        assert k == start
        loops.append(loop)
    return loops


@functools.cache
def _edge_faces(k):
    """The two cell faces an edge lies on, as (axis, side) pairs."""
    a, _, axis = EDGES[k]
    corner = _corner(a)
    return {(other, int(corner[other])) for other in range(3) if other != axis}


def _in_high_face(p, q):
    """True when two edge vertices lie on a common cell face on the high side
    of its axis.  Chords are laid only in low-side faces, so of two cells
    sharing a face only one (the upper) may lay a chord in it: no edge is
    ever used by four triangles."""
    return any(side == 1 for _, side in _edge_faces(p) & _edge_faces(q))


def _allowed(tri, ring):
    """A triangle may not lay a chord of the loop in a high-side cell face:
    the neighbour cell across that face could lay the same chord."""
    n = len(ring)
    pos = {v: i for i, v in enumerate(ring)}
    for p, q in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
        side = (pos[p] - pos[q]) % n in (1, n - 1)
        if not side and _in_high_face(p, q):
            return False
    return True


def _best_triangulation(ring, centre):
    """Dynamic programme over the polygon: the triangulation with the most
    swept volume and no chord in a high-side face (None if impossible)."""
    n = len(ring)
    best = {}
    for length in range(2, n):
        for i in range(n - length):
            j = i + length
            options = []
            for k in range(i + 1, j):
                tri = (ring[i], ring[k], ring[j])
                if not _allowed(tri, ring):
                    continue
                left = best.get((i, k)) if k - i > 1 else (0.0, [])
                right = best.get((k, j)) if j - k > 1 else (0.0, [])
                if left is None or right is None:
                    continue
                options.append((left[0] + right[0] + _swept_volume([tri], centre),
                                left[1] + right[1] + [tri]))
            best[i, j] = max(options, key=lambda o: o[0]) if options else None
    result = best[0, n - 1]
    return None if result is None else result[1]


def _swept_volume(tris, centre):
    volume = 0.0
    for a, b, c in tris:
        if CENTRE in (a, b, c):
            continue
        pa, pb, pc = (_edge_mid(k) - centre for k in (a, b, c))
        volume += abs(np.dot(pa, np.cross(pb, pc)))
    return volume



def _fan(loop, centre):
    """Triangulate a loop: the fan that encloses the most volume seen from
    ``centre`` (the inside corners' centroid), so the patch bulges away from
    the inside as a surface around a convex blob does; never a chord lying in
    a high-side cell face.  When no fan qualifies, the best triangulation
    (DP); when none exists, a fan around an extra vertex inside the cell."""
    best, best_volume = None, -np.inf
    for s in range(len(loop)):
        ring = loop[s:] + loop[:s]
        tris = [(ring[0], ring[j], ring[j + 1]) for j in range(1, len(ring) - 1)]
        if not all(_allowed(t, loop) for t in tris):
            continue
        volume = _swept_volume(tris, centre)
        if volume > best_volume + 1e-12:
            best, best_volume = tris, volume
    if best is None:
        best = _best_triangulation(loop, centre)
    if best is None:
        best = [(CENTRE, loop[j], loop[(j + 1) % len(loop)]) for j in range(len(loop))]
    return best


def _build():
    tris = {}
    centre_loops = np.zeros((256, 64), dtype=np.int64)
    for config in range(256):
        for joined in range(64):
            if joined & ~AMBIGUOUS[config]:
                continue  # decisions only exist for ambiguous faces
            out = []
            inside = [_corner(i) for i in range(8) if (config >> i) & 1]
            centre = np.mean(inside, axis=0) if inside else np.full(3, 0.5)
            for loop in _loops(config, joined):
                fan = _fan(loop, centre)
                if fan[0][0] == CENTRE:
                    assert not centre_loops[config, joined], "one centred loop per cell"
                    centre_loops[config, joined] = sum(1 << k for k in loop)
                out.extend(fan)
            tris[config, joined] = out
    # orient: for one inside corner the normal must point away from it
    t = tris[1, 0][0]
    p = [_edge_mid(k) for k in t]
    n = np.cross(p[1] - p[0], p[2] - p[0])
    if np.dot(n, p[0] - _corner(0)) < 0:
        tris = {key: [(a, c, b) for a, b, c in cfg]
                for key, cfg in tris.items()}
    width = max(len(t) for t in tris.values())
    table = np.full((256, 64, width, 3), -1, dtype=np.int64)
    count = np.zeros((256, 64), dtype=np.int64)
    for (config, joined), cfg_tris in tris.items():
        count[config, joined] = len(cfg_tris)
        if cfg_tris:
            table[config, joined, : len(cfg_tris)] = cfg_tris
    return table, count, centre_loops


STORED = Path(__file__).with_name("_marching_tables.npz")


with np.load(STORED) as _stored:
    #: TRI_TABLE[config, joined] -> triangles as local edge ids (``CENTRE``: the
    #: cell's extra vertex); TRI_COUNT[config, joined] -> how many;
    #: CENTRE_LOOP[config, joined] -> bit mask of the edges whose vertices the
    #: extra vertex is placed among (0: no extra vertex)
    TRI_TABLE, TRI_COUNT, CENTRE_LOOP = _stored["table"], _stored["count"], _stored["centre"]


if __name__ == "__main__":  # pragma: no cover - maintenance
    table, count, centre = _build()
    np.savez_compressed(STORED, table=table.astype(np.int8), count=count.astype(np.int8),
                        centre=centre.astype(np.int16))
    print(f"wrote {STORED}")
