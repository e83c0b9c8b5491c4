"""Marching-cubes lookup tables, derived in code (once, at import).

Corner ``i`` of a cell sits at offset ``(i >> 2 & 1, i >> 1 & 1, i & 1)``
along the array axes (0, 1, 2); bit ``i`` of a cell's configuration is set
when that corner is inside (value > level).

The triangulation of each of the 256 configurations is built from the cell's
faces: on every face, the crossed edges are joined by segments; an ambiguous
face (two diagonal corners inside) always *separates* its inside corners.
That rule looks at the face alone, so two cells sharing a face always cut it
the same way and the mesh is watertight.  Each segment is oriented with the
inside on its left seen from outside the cell, which chains the segments of a
cell into consistently wound loops; each loop is fanned into triangles.  The
winding is chosen so that normals point from inside to outside.
"""

from __future__ import annotations

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
#: per edge: offset of its base corner (axis 0, 1, 2) and its axis
EDGE_BASE = np.array([_corner(a) for a, _, _ in EDGES], dtype=np.int64)
EDGE_AXIS = np.array([axis for _, _, axis in EDGES], dtype=np.int64)


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


def _edge_mid(k):
    a, b, _ = EDGES[k]
    return (_corner(a) + _corner(b)) / 2


def _segments(config):
    """Directed segments (edge k -> edge m) over all faces of a cell."""
    inside = [(config >> i) & 1 for i in range(8)]
    segs = []
    for cycle, normal in _faces():
        crossed = [(cycle[j], cycle[(j + 1) % 4]) for j in range(4)
                   if inside[cycle[j]] != inside[cycle[(j + 1) % 4]]]
        if not crossed:
            continue
        ins = [c for c in cycle if inside[c]]
        if len(crossed) == 2:
            pairs = [(crossed, ins)]
        else:  # ambiguous face: cut off each inside corner on its own
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


def _loops(config):
    nxt = {}
    for k, m in _segments(config):
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


def _build():
    tris = []
    for config in range(256):
        out = []
        for loop in _loops(config):
            for j in range(1, len(loop) - 1):
                out.append((loop[0], loop[j], loop[j + 1]))
        tris.append(out)
    # orient: for one inside corner the normal must point away from it
    t = tris[1][0]
    p = [_edge_mid(k) for k in t]
    n = np.cross(p[1] - p[0], p[2] - p[0])
    if np.dot(n, p[0] - _corner(0)) < 0:
        tris = [[(a, c, b) for a, b, c in cfg] for cfg in tris]
    width = max(len(t) for t in tris)
    table = np.full((256, width, 3), -1, dtype=np.int64)
    count = np.zeros(256, dtype=np.int64)
    for config, cfg_tris in enumerate(tris):
        count[config] = len(cfg_tris)
        if cfg_tris:
            table[config, : len(cfg_tris)] = cfg_tris
    return table, count


TRI_TABLE, TRI_COUNT = _build()
