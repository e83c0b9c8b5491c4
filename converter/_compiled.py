"""The compiled kernels (Cython extensions built at install time), when they can be used.

``_marching`` (marching cubes) and ``_mesh`` (mesh measures, topology, STL
records) are compiled by ``pip install`` from their ``.pyx`` sources
(``setup.py``), so they cost nothing to load: no compiler runs at import or
at first use.  Setting ``EPHEMESH_COMPILED=0`` in the environment turns them
off: every caller then takes its numpy path, which is also the reference the
tests compare against.  A checkout used without installing it (no built
extension) takes the numpy paths too.
"""

from __future__ import annotations

import importlib
import os

_OFF = ("0", "false", "no", "off")


def _wanted():
    return os.environ.get("EPHEMESH_COMPILED", "1").strip().lower() not in _OFF


_usable: list[bool] = []


def usable() -> bool:
    """True when the compiled kernels can be used: they are built and not
    turned off (checked once per process)."""
    if not _usable:
        ok = _wanted()
        if ok:
            try:
                importlib.import_module("converter._marching")
                importlib.import_module("converter._mesh")
            except ImportError:  # not built: numpy then
                ok = False
        _usable.append(ok)
    return _usable[0]


def warm_up():
    """Load the compiled kernels now (a few milliseconds); kept so a process
    that forks workers can load them once, before forking."""
    usable()
