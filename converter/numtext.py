"""Numbers as fixed-width decimal text, made by numpy (no per-number Python).

The text formats (3MF's XML, OBJ) spend their time turning floats into
digits; ``str.format`` or ``np.savetxt`` manage a few MB/s.  Here each
column of a block of numbers becomes a column of ASCII digits by integer
arithmetic on whole arrays, and a row of text is a fixed template with those
columns filled in, so a block of lines is one ``uint8`` array written with
one call.  Fixed width means leading zeros (``00012.5000``, ``-0003.2500``,
``000417``), which 3MF's ``ST_Number`` and ``ST_ResourceIndex`` allow and
every float and integer parser of OBJ readers takes.
"""

from __future__ import annotations

import numpy as np

_ZERO, _MINUS, _POINT = ord("0"), ord("-"), ord(".")


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
    with leading zeros, then ``.`` and ``decimals`` digits (rounded).

    Raises ValueError when a value needs more than ``digits`` integer digits.
    """
    values = np.asarray(values, dtype=np.float64)
    width = decimal_width(digits, decimals)
    if out.shape != (len(values), width):
        raise ValueError(f"out must have shape ({len(values)}, {width})")
    scaled = np.rint(np.abs(values) * 10.0 ** decimals).astype(np.int64)
    if len(scaled) and scaled.max() >= 10 ** (digits + decimals):
        raise ValueError(f"a value needs more than {digits} integer digits")
    whole, fraction = np.divmod(scaled, 10 ** decimals)
    _digits(out[:, 1:1 + digits], whole, digits)
    if decimals:
        out[:, 1 + digits] = _POINT
        _digits(out[:, 2 + digits:], fraction, decimals)
    out[:, 0] = _ZERO
    out[(values < 0) & (scaled > 0), 0] = _MINUS


def fill_integer(out: np.ndarray, values: np.ndarray, digits: int) -> None:
    """Write non-negative integers ``values`` (n,) into ``out`` (n, digits), leading zeros."""
    values = np.asarray(values, dtype=np.int64)
    if out.shape != (len(values), digits):
        raise ValueError(f"out must have shape ({len(values)}, {digits})")
    if len(values) and (values.min() < 0 or values.max() >= 10 ** digits):
        raise ValueError(f"integers must be in [0, 10**{digits})")
    _digits(out, values, digits)


#: "0000" … "9999", four ASCII digits in one uint32 each: four digits a gather
_GROUPS = np.array([list(f"{i:04d}".encode()) for i in range(10_000)],
                   np.uint8).view(np.uint32).ravel()


def _digits(out, values, digits) -> None:
    """``values`` (non-negative, below ``10**digits``) as ``digits`` ASCII
    digits into the columns of ``out``, four at a time from the right."""
    rest = values.astype(np.int32) if digits <= 9 else values  # 32-bit division is faster
    right = digits
    while right > 0:
        take = min(4, right)
        rest, group = np.divmod(rest, 10_000) if right > 4 else (None, rest)
        chars = _GROUPS.take(group).view(np.uint8).reshape(-1, 4)
        out[:, right - take:right] = chars[:, 4 - take:]
        right -= take


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
