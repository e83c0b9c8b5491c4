# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled marching cubes: the plane-by-plane pass of :mod:`converter.marching`.

Built at install time (``setup.py``); every function here runs without the
GIL, so slabs of planes run on threads side by side.  The algorithm, the
vertex numbering and the boundary codes are described in ``marching.py``,
which calls these.

The volume is read where it lies (a C-contiguous array and a box inside it);
the mask of a plane is held as bytes (0 or 1) in rows padded to whole 64-bit
words, so runs of 8 equal columns are compared at once and the set bytes of a
word are visited with count-trailing-zeros.  Output rows go to growing C
buffers (:class:`Growing`), handed to numpy without a copy.
"""

from cython.view cimport array as cvarray
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np

cdef extern from *:
    """
    static inline int ephemesh_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    static inline int ephemesh_clz64(unsigned long long x) { return __builtin_clzll(x); }
    """
    int ctz64 "ephemesh_ctz64" (unsigned long long x) noexcept nogil
    int clz64 "ephemesh_clz64" (unsigned long long x) noexcept nogil

#: how far (in voxels) a vertex stays from a voxel whose value is the level
cdef double T_EPS = 5e-5
#: the k-th centre vertex of a slab has the code CENTRE_CODE - k
cdef int32_t CENTRE_CODE = -(1 << 30) - 1

ctypedef fused vol_t:
    int16_t
    int32_t
    float
    double

ctypedef fused out_t:
    int32_t
    int64_t


# --- growing row buffers ------------------------------------------------------

cdef struct Buf:
    char *data
    Py_ssize_t n    # rows in use
    Py_ssize_t cap  # rows allocated
    Py_ssize_t row  # bytes a row


cdef int buf_init(Buf *b, Py_ssize_t rows, Py_ssize_t row) noexcept nogil:
    if rows < 1:
        rows = 1
    b.data = <char *>malloc(rows * row)
    b.n = 0
    b.cap = rows if b.data != NULL else 0
    b.row = row
    return 0 if b.data != NULL else -1


cdef int buf_reserve(Buf *b, Py_ssize_t rows) noexcept nogil:
    """Room for at least ``rows`` rows (doubling, so growth is amortized)."""
    cdef Py_ssize_t cap
    cdef char *data
    if rows <= b.cap:
        return 0
    cap = 2 * b.cap
    if cap < rows:
        cap = rows
    data = <char *>realloc(b.data, cap * b.row)
    if data == NULL:
        return -1
    b.data = data
    b.cap = cap
    return 0


cdef object buf_take(Buf *b, str fmt):
    """The buffer's rows in use as an (n, 3) numpy array that owns the memory."""
    cdef Py_ssize_t n = b.n
    cdef cvarray arr
    if b.data == NULL and buf_init(b, 1, b.row) < 0:
        raise MemoryError
    arr = cvarray(shape=(b.cap, 3), itemsize=b.row // 3, format=fmt, mode="c",
                  allocate_buffer=False)
    arr.data = b.data
    arr.callback_free_data = free
    b.data = NULL
    b.cap = 0
    b.n = 0
    return np.asarray(arr)[:n]


cdef class Growing:
    """Edge vertices (float32 × 3), faces (int32 codes × 3) and centre vertices
    (float32 × 3) of one or more slabs, in C buffers that grow as needed."""

    cdef Buf verts, faces, centres

    def __cinit__(self, Py_ssize_t verts=1024, Py_ssize_t faces=2048, Py_ssize_t centres=16):
        self.verts.data = self.faces.data = self.centres.data = NULL
        if (buf_init(&self.verts, verts, 12) < 0 or buf_init(&self.faces, faces, 12) < 0
                or buf_init(&self.centres, centres, 12) < 0):
            raise MemoryError

    def __dealloc__(self):
        free(self.verts.data)
        free(self.faces.data)
        free(self.centres.data)

    @property
    def nv(self):
        return self.verts.n

    @property
    def nf(self):
        return self.faces.n

    @property
    def nc(self):
        return self.centres.n

    def reserve(self, Py_ssize_t verts, Py_ssize_t faces):
        """Room for at least this many vertex and face rows."""
        if buf_reserve(&self.verts, verts) < 0 or buf_reserve(&self.faces, faces) < 0:
            raise MemoryError

    def append_centres(self):
        """Copy the centre vertices after the edge vertices (nv grows by nc)."""
        cdef Py_ssize_t nv = self.verts.n, nc = self.centres.n
        if buf_reserve(&self.verts, nv + nc) < 0:
            raise MemoryError
        if nc:
            memcpy(self.verts.data + nv * 12, self.centres.data, nc * 12)
        self.verts.n = nv + nc

    def take(self):
        """(vertices, face codes, centre vertices) as numpy arrays; the buffers
        pass to them and this object starts empty."""
        return (buf_take(&self.verts, "f"), buf_take(&self.faces, "i"),
                buf_take(&self.centres, "f"))


# --- plane buffers --------------------------------------------------------------

cdef class Workspace:
    """Plane buffers for :func:`slab`, reused slab after slab: two masks (rows of
    whole 64-bit words, the bytes past the plane 0), their rows' first and last
    inside columns, and the edge numbers of two planes and of the edges between."""

    cdef readonly Py_ssize_t ny, nx, row_words
    cdef uint8_t *masks
    cdef Py_ssize_t *firsts
    cdef Py_ssize_t *lasts
    cdef int32_t *ids_x
    cdef int32_t *ids_y
    cdef int32_t *ids_z

    def __cinit__(self, Py_ssize_t ny, Py_ssize_t nx):
        self.ny = ny
        self.nx = nx
        self.row_words = nx // 8 + 1  # at least one spare byte past the plane, read as 0
        self.masks = <uint8_t *>calloc(2 * ny * 8 * self.row_words, 1)
        self.firsts = <Py_ssize_t *>malloc(2 * ny * sizeof(Py_ssize_t))
        self.lasts = <Py_ssize_t *>malloc(2 * ny * sizeof(Py_ssize_t))
        self.ids_x = <int32_t *>malloc(2 * ny * nx * sizeof(int32_t))
        self.ids_y = <int32_t *>malloc(2 * ny * nx * sizeof(int32_t))
        self.ids_z = <int32_t *>malloc(ny * nx * sizeof(int32_t))
        if (self.masks == NULL or self.firsts == NULL or self.lasts == NULL
                or self.ids_x == NULL or self.ids_y == NULL or self.ids_z == NULL):
            raise MemoryError

    def __dealloc__(self):
        free(self.masks)
        free(self.firsts)
        free(self.lasts)
        free(self.ids_x)
        free(self.ids_y)
        free(self.ids_z)


# --- tables ---------------------------------------------------------------------

cdef struct TableView:
    const int8_t *tri_table     # (256, J, S, 3)
    const int8_t *tri_count     # (256, J)
    const int16_t *centre_loop  # (256, J)
    const int8_t *ambiguous     # (256,)
    const int8_t *face_corners  # (6, 4)
    const int8_t *edge_base     # (13, 3)
    Py_ssize_t joined, tris


cdef class Tables:
    """The lookup tables of :mod:`converter._marching_tables`, held for the kernel."""

    cdef TableView view
    cdef object keep

    def __cinit__(self, tri_table, tri_count, centre_loop, ambiguous, face_corners, edge_base):
        cdef const int8_t[:, :, :, ::1] tt = np.ascontiguousarray(tri_table, np.int8)
        cdef const int8_t[:, ::1] tc = np.ascontiguousarray(tri_count, np.int8)
        cdef const int16_t[:, ::1] cl = np.ascontiguousarray(centre_loop, np.int16)
        cdef const int8_t[::1] am = np.ascontiguousarray(ambiguous, np.int8)
        cdef const int8_t[:, ::1] fc = np.ascontiguousarray(face_corners, np.int8)
        cdef const int8_t[:, ::1] eb = np.ascontiguousarray(edge_base, np.int8)
        if (tt.shape[0] != 256 or tt.shape[3] != 3 or tc.shape[0] != 256
                or tc.shape[1] != tt.shape[1] or cl.shape[1] != tt.shape[1]
                or am.shape[0] != 256 or fc.shape[0] != 6 or fc.shape[1] != 4
                or eb.shape[0] < 12 or eb.shape[1] != 3):
            raise ValueError("marching cubes tables of unexpected shapes")
        self.keep = (tt, tc, cl, am, fc, eb)
        self.view.tri_table = &tt[0, 0, 0, 0]
        self.view.tri_count = &tc[0, 0]
        self.view.centre_loop = &cl[0, 0]
        self.view.ambiguous = &am[0]
        self.view.face_corners = &fc[0, 0]
        self.view.edge_base = &eb[0, 0]
        self.view.joined = tt.shape[1]
        self.view.tris = tt.shape[2]


# --- the kernel -------------------------------------------------------------------

cdef struct Geom:
    Py_ssize_t oz, oy, ox, bz, by, bx  # the box: offset and size in the array
    Py_ssize_t sz, sy                  # element strides of the array's planes and rows
    Py_ssize_t p, ny, nx, row_words    # pad (0 or 1), the virtual plane's size, mask words a row
    double padval, level, thr


cdef inline double value(const vol_t *vol, const Geom *g, Py_ssize_t z, Py_ssize_t y,
                         Py_ssize_t x) noexcept nogil:
    """The value at virtual (padded) voxel (z, y, x) as a double."""
    cdef Py_ssize_t zi = z - g.p, yi = y - g.p, xi = x - g.p
    if zi < 0 or yi < 0 or xi < 0 or zi >= g.bz or yi >= g.by or xi >= g.bx:
        return g.padval
    return <double>vol[(g.oz + zi) * g.sz + (g.oy + yi) * g.sy + g.ox + xi]


cdef inline double edge_point(const vol_t *vol, const Geom *g, Py_ssize_t z, Py_ssize_t y,
                              Py_ssize_t x, int axis) noexcept nogil:
    """Where the level crosses the edge from virtual voxel (z, y, x) along ``axis``."""
    cdef double v0 = value(vol, g, z, y, x), v1, t
    if axis == 0:
        v1 = value(vol, g, z + 1, y, x)
    elif axis == 1:
        v1 = value(vol, g, z, y + 1, x)
    else:
        v1 = value(vol, g, z, y, x + 1)
    t = (g.level - v0) / (v1 - v0)
    if t < T_EPS:
        t = T_EPS
    elif t > 1.0 - T_EPS:
        t = 1.0 - T_EPS
    return t


cdef inline void put_vertex(Buf *verts, const vol_t *vol, const Geom *g, Py_ssize_t z,
                            Py_ssize_t y, Py_ssize_t x, int axis) noexcept nogil:
    cdef double t = edge_point(vol, g, z, y, x, axis)
    cdef float *v = <float *>verts.data + 3 * verts.n
    v[0] = <float>(<double>(z - g.p) + t) if axis == 0 else <float>(z - g.p)
    v[1] = <float>(<double>(y - g.p) + t) if axis == 1 else <float>(y - g.p)
    v[2] = <float>(<double>(x - g.p) + t) if axis == 2 else <float>(x - g.p)
    verts.n += 1


cdef inline uint64_t next_word(const uint64_t *row, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    return row[i + 1] if i + 1 < n else 0


cdef inline uint64_t shifted(const uint64_t *row, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Word ``i`` of a row of mask bytes moved down one byte: byte j holds byte j + 1."""
    return (row[i] >> 8) | (next_word(row, i, n) << 56)


cdef void inside_row(const vol_t *src, uint8_t *out, Py_ssize_t n, double thr) noexcept nogil:
    """out[x] = src[x] > thr, compared in the volume's own type (floats) or
    against floor(level) (integers, where v > level <=> v > floor(level))."""
    cdef Py_ssize_t x
    cdef float tf
    cdef vol_t t
    cdef double top, bottom
    if vol_t is float:
        tf = <float>thr
        for x in range(n):
            out[x] = src[x] > tf
    elif vol_t is double:
        for x in range(n):
            out[x] = src[x] > thr
    else:
        # integers: a threshold outside the type's range makes every voxel alike
        if vol_t is int16_t:
            top, bottom = 32767.0, -32768.0
        else:
            top, bottom = 2147483647.0, -2147483648.0
        if thr >= top or thr < bottom:
            memset(out, 0 if thr >= top else 1, n)
            return
        t = <vol_t>thr
        for x in range(n):
            out[x] = src[x] > t


cdef void load_plane(const vol_t *vol, const Geom *g, Py_ssize_t z, uint8_t *mask,
                     Py_ssize_t *first, Py_ssize_t *last) noexcept nogil:
    """Inside mask of virtual plane ``z`` and each row's first/last inside column."""
    cdef Py_ssize_t rowbytes = 8 * g.row_words, nx = g.nx, zi = z - g.p, yi, y, i
    cdef uint8_t *row
    cdef const uint64_t *words
    cdef uint64_t w
    for y in range(g.ny):
        yi = y - g.p
        row = mask + y * rowbytes
        first[y] = nx
        last[y] = -1
        if zi < 0 or zi >= g.bz or yi < 0 or yi >= g.by:
            memset(row, 0, rowbytes)
            continue
        if g.p:
            row[0] = 0
        inside_row(vol + (g.oz + zi) * g.sz + (g.oy + yi) * g.sy + g.ox, row + g.p, g.bx,
                   g.thr)
        memset(row + g.bx + g.p, 0, rowbytes - g.bx - g.p)
        words = <const uint64_t *>row
        for i in range(g.row_words):
            w = words[i]
            if w:
                first[y] = 8 * i + (ctz64(w) >> 3)
                break
        if first[y] < nx:
            i = g.row_words - 1
            while words[i] == 0:
                i -= 1
            last[y] = 8 * i + ((63 - clz64(words[i])) >> 3)


cdef inline int32_t edge_number(bint own, Buf *verts, const vol_t *vol, const Geom *g,
                                Py_ssize_t z, Py_ssize_t y, Py_ssize_t x, int axis,
                                Py_ssize_t *nb) noexcept nogil:
    """A crossed edge's number: its vertex's, placed now (``own`` plane), or the
    next boundary code ``-1 - i`` (the first plane of the next slab)."""
    cdef int32_t number
    if own:
        number = <int32_t>verts.n
        put_vertex(verts, vol, g, z, y, x, axis)
        return number
    number = <int32_t>(-1 - nb[0])
    nb[0] += 1
    return number


cdef int number_plane(const vol_t *vol, const Geom *g, Py_ssize_t z, const uint64_t *words,
                      const Py_ssize_t *first, const Py_ssize_t *last, int32_t *ids_x,
                      int32_t *ids_y, bint own, Buf *verts) noexcept nogil:
    """Number the crossed x and y edges of virtual plane ``z``, row by row.

    ``own``: store vertices and number them on from ``verts.n``; otherwise
    write boundary codes ``-1 - i`` (the next slab's numbers)."""
    cdef Py_ssize_t ny = g.ny, nx = g.nx, rw = g.row_words, nb = 0, y, i, x, lo, hi
    cdef const uint64_t *row
    cdef const uint64_t *r1
    cdef uint64_t d
    for y in range(ny):
        if own and buf_reserve(verts, verts.n + 2 * nx) < 0:
            return -1
        row = words + y * rw
        if last[y] >= 0:  # x edges of row y: byte x differs from byte x + 1
            lo = first[y] - 1 if first[y] > 0 else 0
            hi = last[y] if last[y] < nx - 2 else nx - 2
            for i in range(lo >> 3, (hi >> 3) + 1):
                d = row[i] ^ shifted(row, i, rw)
                while d:
                    x = 8 * i + (ctz64(d) >> 3)
                    d &= d - 1
                    if x > nx - 2:
                        break
                    ids_x[y * nx + x] = edge_number(own, verts, vol, g, z, y, x, 2, &nb)
        if y + 1 < ny:  # y edges from row y to row y + 1
            lo = first[y] if first[y] < first[y + 1] else first[y + 1]
            hi = last[y] if last[y] > last[y + 1] else last[y + 1]
            if hi < 0:
                continue
            r1 = row + rw
            for i in range(lo >> 3, (hi >> 3) + 1):
                d = row[i] ^ r1[i]
                while d:
                    x = 8 * i + (ctz64(d) >> 3)
                    d &= d - 1
                    ids_y[y * nx + x] = edge_number(own, verts, vol, g, z, y, x, 1, &nb)
    return 0


cdef int number_between(const vol_t *vol, const Geom *g, Py_ssize_t z, const uint64_t *words_a,
                        const Py_ssize_t *first_a, const Py_ssize_t *last_a,
                        const uint64_t *words_b, const Py_ssize_t *first_b,
                        const Py_ssize_t *last_b, int32_t *ids_z, Buf *verts) noexcept nogil:
    """Number the crossed edges from virtual plane ``z`` to plane ``z + 1``."""
    cdef Py_ssize_t nx = g.nx, rw = g.row_words, y, i, x, lo, hi
    cdef const uint64_t *ra
    cdef const uint64_t *rb
    cdef uint64_t d
    for y in range(g.ny):
        lo = first_a[y] if first_a[y] < first_b[y] else first_b[y]
        hi = last_a[y] if last_a[y] > last_b[y] else last_b[y]
        if hi < 0:
            continue
        if buf_reserve(verts, verts.n + hi - lo + 8) < 0:
            return -1
        ra = words_a + y * rw
        rb = words_b + y * rw
        for i in range(lo >> 3, (hi >> 3) + 1):
            d = ra[i] ^ rb[i]
            while d:
                x = 8 * i + (ctz64(d) >> 3)
                d &= d - 1
                ids_z[y * nx + x] = <int32_t>verts.n
                put_vertex(verts, vol, g, z, y, x, 0)
    return 0


cdef inline double clamp01(double v) noexcept nogil:
    if v < 0.0:
        return 0.0
    if v > 1.0:
        return 1.0
    return v


cdef void centre(const vol_t *vol, const Geom *g, Py_ssize_t z, Py_ssize_t y, Py_ssize_t x,
                 const double *c, int loop, const int8_t *edge_base, float *out) noexcept nogil:
    """The extra vertex of a cell: the mean of its loop's vertices, then Newton
    steps on the cell's trilinear field."""
    cdef double total0 = 0.0, total1 = 0.0, total2 = 0.0, t, u, v, w
    cdef double aw00, aw01, aw10, aw11, av0, av1, f, gu, gv, gw, norm2, step
    cdef Py_ssize_t dz, dy, dx
    cdef int k, count = 0, axis, it
    for k in range(12):
        if not (loop >> k) & 1:
            continue
        dz = edge_base[3 * k]
        dy = edge_base[3 * k + 1]
        dx = edge_base[3 * k + 2]
        axis = 0 if k < 4 else (1 if k < 8 else 2)
        t = edge_point(vol, g, z + dz, y + dy, x + dx, axis)
        total0 += <float>(<double>(z + dz - g.p) + t) if axis == 0 else <float>(z + dz - g.p)
        total1 += <float>(<double>(y + dy - g.p) + t) if axis == 1 else <float>(y + dy - g.p)
        total2 += <float>(<double>(x + dx - g.p) + t) if axis == 2 else <float>(x + dx - g.p)
        count += 1
    u = total0 / count - <double>(z - g.p)
    v = total1 / count - <double>(y - g.p)
    w = total2 / count - <double>(x - g.p)
    for it in range(8):  # c[4 dz + 2 dy + dx]
        aw00 = c[0] * (1 - w) + c[1] * w
        aw01 = c[2] * (1 - w) + c[3] * w
        aw10 = c[4] * (1 - w) + c[5] * w
        aw11 = c[6] * (1 - w) + c[7] * w
        av0 = aw00 * (1 - v) + aw01 * v
        av1 = aw10 * (1 - v) + aw11 * v
        f = av0 * (1 - u) + av1 * u - g.level
        gu = av1 - av0
        gv = (aw01 - aw00) * (1 - u) + (aw11 - aw10) * u
        gw = (((c[1] - c[0]) * (1 - v) + (c[3] - c[2]) * v) * (1 - u)
              + ((c[5] - c[4]) * (1 - v) + (c[7] - c[6]) * v) * u)
        norm2 = gu * gu + gv * gv + gw * gw
        step = f / norm2 if norm2 > 1e-30 else 0.0
        u = clamp01(u - step * gu)
        v = clamp01(v - step * gv)
        w = clamp01(w - step * gw)
    out[0] = <float>(u + <double>(z - g.p))
    out[1] = <float>(v + <double>(y - g.p))
    out[2] = <float>(w + <double>(x - g.p))


cdef inline Py_ssize_t min2(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t max2(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef int cells(const vol_t *vol, const Geom *g, const TableView *tb, Py_ssize_t z,
               const uint8_t *mask_a, const Py_ssize_t *first_a, const Py_ssize_t *last_a,
               const uint8_t *mask_b, const Py_ssize_t *first_b, const Py_ssize_t *last_b,
               const int32_t *ids_x_a, const int32_t *ids_y_a, const int32_t *ids_x_b,
               const int32_t *ids_y_b, const int32_t *ids_z, Buf *faces,
               Buf *centres) noexcept nogil:
    """Triangles of the cells between virtual planes ``z`` and ``z + 1``."""
    cdef Py_ssize_t ny = g.ny, nx = g.nx, rw = g.row_words, rb = 8 * rw
    cdef Py_ssize_t y, i, x, lo, hi, row0, row1, k, s, e, dx, dy, entry
    cdef const uint64_t *a0
    cdef const uint64_t *a1
    cdef const uint64_t *b0
    cdef const uint64_t *b1
    cdef uint64_t differ, nxt, active, n0
    cdef double corner[8]
    cdef double ca, cb, cc, cd
    cdef int cfg, amb, joined, loop, n, f, m
    cdef bint loaded
    cdef int32_t centre_id, vid
    cdef int32_t *fout
    for y in range(ny - 1):
        lo = min2(min2(first_a[y], first_a[y + 1]), min2(first_b[y], first_b[y + 1]))
        hi = max2(max2(last_a[y], last_a[y + 1]), max2(last_b[y], last_b[y + 1]))
        if hi < 0:
            continue
        lo = max2(lo - 1, 0)
        hi = min2(hi, nx - 2)
        if (buf_reserve(faces, faces.n + tb.tris * (hi - lo + 1)) < 0
                or buf_reserve(centres, centres.n + hi - lo + 1) < 0):
            return -1
        row0 = y * rb
        row1 = row0 + rb
        a0 = <const uint64_t *>(mask_a + row0)
        a1 = <const uint64_t *>(mask_a + row1)
        b0 = <const uint64_t *>(mask_b + row0)
        b1 = <const uint64_t *>(mask_b + row1)
        for i in range(lo >> 3, (hi >> 3) + 1):
            # a cell is active unless its 8 corners agree: the 4 rows agree at x
            # and at x + 1, and the first row does not change from x to x + 1
            differ = (a0[i] ^ a1[i]) | (a0[i] ^ b0[i]) | (a0[i] ^ b1[i])
            n0 = next_word(a0, i, rw)
            nxt = (n0 ^ next_word(a1, i, rw)) | (n0 ^ next_word(b0, i, rw)) \
                | (n0 ^ next_word(b1, i, rw))
            active = differ | (differ >> 8) | (nxt << 56) | (a0[i] ^ shifted(a0, i, rw))
            while active:
                x = 8 * i + (ctz64(active) >> 3)
                active &= active - 1
                if x > hi:
                    break
                cfg = (mask_a[row0 + x] | (mask_a[row0 + x + 1] << 1) | (mask_a[row1 + x] << 2)
                       | (mask_a[row1 + x + 1] << 3) | (mask_b[row0 + x] << 4)
                       | (mask_b[row0 + x + 1] << 5) | (mask_b[row1 + x] << 6)
                       | (mask_b[row1 + x + 1] << 7))
                amb = tb.ambiguous[cfg]
                loaded = False
                joined = 0
                if amb:
                    for k in range(8):
                        corner[k] = value(vol, g, z + (k >> 2), y + ((k >> 1) & 1), x + (k & 1))
                    loaded = True
                    for f in range(6):
                        if (amb >> f) & 1:
                            ca = corner[tb.face_corners[4 * f]]
                            cb = corner[tb.face_corners[4 * f + 1]]
                            cc = corner[tb.face_corners[4 * f + 2]]
                            cd = corner[tb.face_corners[4 * f + 3]]
                            if (ca * cc - cb * cd) / (ca + cc - cb - cd) > g.level:
                                joined |= 1 << f
                entry = cfg * tb.joined + joined
                centre_id = 0
                loop = tb.centre_loop[entry]
                if loop:
                    if not loaded:
                        for k in range(8):
                            corner[k] = value(vol, g, z + (k >> 2), y + ((k >> 1) & 1),
                                              x + (k & 1))
                    centre(vol, g, z, y, x, corner, loop, tb.edge_base,
                           <float *>centres.data + 3 * centres.n)
                    centre_id = <int32_t>(CENTRE_CODE - centres.n)
                    centres.n += 1
                n = tb.tri_count[entry]
                fout = <int32_t *>faces.data + 3 * faces.n
                for s in range(n):
                    for m in range(3):
                        e = tb.tri_table[(entry * tb.tris + s) * 3 + m]
                        if e == 12:
                            vid = centre_id
                        elif e < 4:  # edges along axis 0
                            vid = ids_z[(y + (e >> 1)) * nx + x + (e & 1)]
                        elif e < 8:  # along axis 1
                            dx = tb.edge_base[3 * e + 2]
                            if tb.edge_base[3 * e] == 0:
                                vid = ids_y_a[y * nx + x + dx]
                            else:
                                vid = ids_y_b[y * nx + x + dx]
                        else:  # along axis 2
                            dy = tb.edge_base[3 * e + 1]
                            if tb.edge_base[3 * e] == 0:
                                vid = ids_x_a[(y + dy) * nx + x]
                            else:
                                vid = ids_x_b[(y + dy) * nx + x]
                        fout[3 * s + m] = vid
                faces.n += n
    return 0


cdef int run_slab(const vol_t *vol, const Geom *g, const TableView *tb, Py_ssize_t z0,
                  Py_ssize_t z1, bint last_slab, Workspace work, Buf *verts, Buf *faces,
                  Buf *centres) noexcept nogil:
    cdef Py_ssize_t ny = g.ny, nx = g.nx, plane_bytes = ny * 8 * g.row_words, a = 0, b, z
    cdef uint8_t *masks = work.masks
    cdef Py_ssize_t *firsts = work.firsts
    cdef Py_ssize_t *lasts = work.lasts
    cdef int32_t *ids_x = work.ids_x
    cdef int32_t *ids_y = work.ids_y
    cdef bint own
    load_plane(vol, g, z0, masks, firsts, lasts)
    if number_plane(vol, g, z0, <const uint64_t *>masks, firsts, lasts, ids_x, ids_y, True,
                    verts) < 0:
        return -1
    for z in range(z0, z1):
        b = 1 - a
        load_plane(vol, g, z + 1, masks + b * plane_bytes, firsts + b * ny, lasts + b * ny)
        if number_between(vol, g, z, <const uint64_t *>(masks + a * plane_bytes),
                          firsts + a * ny, lasts + a * ny,
                          <const uint64_t *>(masks + b * plane_bytes), firsts + b * ny,
                          lasts + b * ny, work.ids_z, verts) < 0:
            return -1
        own = z + 1 < z1 or last_slab
        if number_plane(vol, g, z + 1, <const uint64_t *>(masks + b * plane_bytes),
                        firsts + b * ny, lasts + b * ny, ids_x + b * ny * nx,
                        ids_y + b * ny * nx, own, verts) < 0:
            return -1
        if cells(vol, g, tb, z, masks + a * plane_bytes, firsts + a * ny, lasts + a * ny,
                 masks + b * plane_bytes, firsts + b * ny, lasts + b * ny,
                 ids_x + a * ny * nx, ids_y + a * ny * nx, ids_x + b * ny * nx,
                 ids_y + b * ny * nx, work.ids_z, faces, centres) < 0:
            return -1
        a = b
    return 0


def slab(const vol_t[:, :, ::1] volume, geometry, Py_ssize_t z0, Py_ssize_t z1, Workspace work,
         Growing out, Tables tables):
    """Append the vertices and triangles of the cells between virtual planes z0
    and z1 to ``out``.

    ``geometry`` (a :class:`converter.marching.SlabGeometry`): ``box`` = (offset
    z, y, x, size z, y, x), the part of ``volume`` to mesh, with ``pad`` (0 or
    1) virtual layers of ``pad_value`` around it; ``threshold``, the inside
    test's (floor(level) for integer volumes); ``level``, where vertices are
    interpolated.  Own vertices are numbered on from ``out.nv``; unless the
    slab ends at the last plane, the next slab's first plane gets boundary
    codes, and centre vertices ``CENTRE_CODE - k`` (see ``marching.py``).
    """
    cdef Geom g
    cdef const vol_t *vol = NULL
    cdef Py_ssize_t p = geometry.pad
    cdef bint last_slab
    cdef int rc
    g.oz, g.oy, g.ox, g.bz, g.by, g.bx = (int(v) for v in geometry.box)
    if (g.oz < 0 or g.oy < 0 or g.ox < 0 or g.bz < 0 or g.by < 0 or g.bx < 0
            or g.oz + g.bz > volume.shape[0] or g.oy + g.by > volume.shape[1]
            or g.ox + g.bx > volume.shape[2]):
        raise ValueError("the box does not lie inside the volume")
    if p not in (0, 1):
        raise ValueError("pad must be 0 or 1")
    g.sz = volume.shape[1] * volume.shape[2]
    g.sy = volume.shape[2]
    g.p = p
    g.ny = g.by + 2 * p
    g.nx = g.bx + 2 * p
    g.row_words = work.row_words
    g.padval = geometry.pad_value
    g.level = geometry.level
    g.thr = geometry.threshold
    if work.ny != g.ny or work.nx != g.nx:
        raise ValueError("the workspace was made for planes of another size")
    if not (0 <= z0 <= z1 < g.bz + 2 * p):
        raise ValueError("the slab lies outside the volume")
    last_slab = z1 == g.bz + 2 * p - 1
    if volume.shape[0] and volume.shape[1] and volume.shape[2]:
        vol = &volume[0, 0, 0]
    with nogil:
        rc = run_slab(vol, &g, &tables.view, z0, z1, last_slab, work, &out.verts, &out.faces,
                      &out.centres)
    if rc < 0:
        raise MemoryError


def resolve(const int32_t[:, ::1] codes, out_t[:, ::1] out, int64_t own_offset,
            int64_t next_offset, int64_t centre_offset):
    """Slab vertex codes → global vertex numbers (``out`` may be ``codes``)."""
    cdef Py_ssize_t i, j
    cdef int32_t c
    if codes.shape[0] != out.shape[0] or codes.shape[1] != 3 or out.shape[1] != 3:
        raise ValueError("codes and out must both be (n, 3)")
    with nogil:
        for i in range(codes.shape[0]):
            for j in range(3):
                c = codes[i, j]
                if c >= 0:
                    out[i, j] = <out_t>(own_offset + c)
                elif c > CENTRE_CODE:
                    out[i, j] = <out_t>(next_offset + (-1 - <int64_t>c))
                else:
                    out[i, j] = <out_t>(centre_offset + (<int64_t>CENTRE_CODE - c))
