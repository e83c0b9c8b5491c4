"""Numbers as fixed-width decimal text (no per-number Python).

The text formats (3MF's XML, OBJ) spend their time turning floats into
digits; ``str.format`` or ``np.savetxt`` manage a few MB/s.  Here a row of
text is a fixed template (``LineTemplate``) whose fields, one column of
numbers each, the compiled kernel ``_text.pyx`` fills with ASCII digits
(this module checks the arguments first), so a block of lines is one
``uint8`` array written with one call.  Fixed width means leading zeros (``00012.5000``, ``-0003.2500``,
``000417``), which 3MF's ``ST_Number`` and ``ST_ResourceIndex`` allow and
every float and integer parser of OBJ readers takes.
"""

from __future__ import annotations

import numpy as np

from . import _text


def int_digits(largest: float) -> int:
    """Digits the integer part of numbers up to ``largest`` in magnitude needs (>= 1)."""
    largest = float(largest)
    if not np.isfinite(largest):
        raise ValueError("numbers must be finite")
    return max(1, len(str(int(abs(largest)))))


def decimal_width(digits: int, decimals: int) -> int:
    """Characters of one number: sign, ``digits``, point and ``decimals``."""
    return 1 + digits + (1 + decimals if decimals else 0)


def fill_decimal(out: np.ndarray, values: np.ndarray, digits: int, decimals: int) -> None:
    """Write ``values`` (n,) into ``out`` (n, decimal_width) as ASCII: a sign
    column (``-``, or ``0`` for a positive value), ``digits`` integer digits
    with leading zeros, then ``.`` and ``decimals`` digits (rounded half to even).

    Raises ValueError when a value needs more than ``digits`` integer digits
    (or is not finite).
    """
    values = np.asarray(values, dtype=np.float64)
    width = decimal_width(digits, decimals)
    if values.ndim != 1 or out.shape != (len(values), width) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 of shape ({len(values)}, {width})")
    if not _text.decimal_column(values, out, int(digits), int(decimals)):
        raise ValueError(f"a value needs more than {digits} integer digits")


def fill_integer(out: np.ndarray, values: np.ndarray, digits: int, offset: int = 0) -> None:
    """Write the integers ``values + offset`` (n,), each in ``[0, 10**digits)``,
    into ``out`` (n, digits) with leading zeros."""
    values = np.asarray(values)
    if values.dtype not in (np.int32, np.int64):
        values = values.astype(np.int64)
    if values.ndim != 1 or out.shape != (len(values), digits) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 of shape ({len(values)}, {digits})")
    if len(values) and (int(values.min()) + offset < 0
                        or int(values.max()) + offset >= 10 ** digits):
        raise ValueError(f"integers must be in [0, 10**{digits})")
    _text.integer_column(values, out, int(digits), int(offset))


def made_ahead(starts, make, workers: int = 1):
    """``make(start)`` for each of ``starts``, in order.  With ``workers`` > 1
    the next block is made on a thread while the caller writes this one (the
    kernel and file writes release the GIL); with 1, all in the calling thread."""
    if workers <= 1:
        for start in starts:
            yield make(start)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in starts:
            ahead = pool.submit(make, start)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()


class LineTemplate:
    """Lines of text made from a template with fixed-width fields.

    ``pieces`` alternate literal text and field widths:
    ``LineTemplate(['<v x="', 11, '" y="', 11, '"/>\\n'])``; ``block(n)``
    gives an (n, width) array holding the literal text, and ``fields(block)``
    the views to fill, one per field.
    """

    def __init__(self, pieces):
        self.literal = []
        self.spans = []
        pos = 0
        for piece in pieces:
            if isinstance(piece, str):
                raw = piece.encode("ascii")
                self.literal.append((pos, raw))
                pos += len(raw)
            else:
                self.spans.append((pos, pos + int(piece)))
                pos += int(piece)
        self.width = pos
        self._row = np.zeros(pos, np.uint8)
        for start, raw in self.literal:
            self._row[start:start + len(raw)] = np.frombuffer(raw, np.uint8)

    def block(self, n: int) -> np.ndarray:
        """``n`` rows of the template, fields unfilled."""
        out = np.empty((n, self.width), np.uint8)
        out[:] = self._row
        return out

    def fields(self, rows: np.ndarray) -> list[np.ndarray]:
        """The field columns of ``rows``, in order."""
        return [rows[:, a:b] for a, b in self.spans]
