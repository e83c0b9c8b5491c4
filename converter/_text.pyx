# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Fixed-width decimal digits for the text formats (``numtext.py`` checks the
arguments: the shapes, and that every value fits its width).

``decimal_column`` and ``integer_column`` fill one field of a block of lines
(an (n, width) strided view of uint8) from one column of numbers, without
the GIL: the same text as numtext's numpy path, at the STL writer's pace.
"""

from libc.math cimport fabs, nearbyint
from libc.stdint cimport int32_t, int64_t

ctypedef fused idx_t:
    int32_t
    int64_t


def decimal_column(const double[:] values, unsigned char[:, :] out, int digits, int decimals):
    """``values`` as ``-``/``0``, ``digits`` digits, ``.``, ``decimals`` digits;
    returns False (writing nothing more) when a value does not fit."""
    cdef Py_ssize_t n = values.shape[0], i
    cdef int k, col, width = 1 + digits + (1 + decimals if decimals else 0)
    cdef double scale = 1.0, v, rounded
    cdef long long q, limit = 1
    cdef bint fits = True
    if out.shape[0] != n or out.shape[1] != width:
        raise ValueError("out must be (len(values), width)")
    for k in range(decimals):
        scale *= 10.0
    for k in range(digits + decimals):
        limit *= 10
    with nogil:
        for i in range(n):
            v = values[i]
            rounded = nearbyint(fabs(v) * scale)
            if not (rounded < <double> limit):  # NaN and infinity too
                fits = False
                break
            q = <long long> rounded
            out[i, 0] = 45 if (v < 0 and q > 0) else 48
            col = width - 1
            for k in range(decimals):
                out[i, col] = 48 + q % 10
                q = q // 10
                col -= 1
            if decimals:
                out[i, col] = 46
                col -= 1
            for k in range(digits):
                out[i, col] = 48 + q % 10
                q = q // 10
                col -= 1
    return fits


def integer_column(const idx_t[:] values, unsigned char[:, :] out, int digits, int64_t offset):
    """``values + offset`` (each in [0, 10**digits), checked by the caller) as
    ``digits`` digits with leading zeros."""
    cdef Py_ssize_t n = values.shape[0], i
    cdef int k, col
    cdef int64_t q
    if out.shape[0] != n or out.shape[1] != digits:
        raise ValueError("out must be (len(values), digits)")
    with nogil:
        for i in range(n):
            q = values[i] + offset
            col = digits - 1
            for k in range(digits):
                out[i, col] = 48 + q % 10
                q = q // 10
                col -= 1
