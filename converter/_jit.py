"""numba, when it can be used: one decorator for the compiled kernels.

The kernels (``marching_kernel.py``, ``mesh_kernel.py``) are compiled on
first use and cached on disk next to their source (numba's ``cache=True``;
numba falls back to a per-user cache folder when the package folder is not
writable, and the kernels still run, uncached, when neither is).  Setting
``EPHEMESH_JIT=0`` in the environment turns the kernels off: every caller
then takes its numpy path, which is also the reference the tests compare
against.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import threading


def _numba_wanted():
    if os.environ.get("EPHEMESH_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("numba") is not None


#: True when numba is installed and not turned off (numba itself is imported
#: only when a kernel is first needed, so importing the converter stays cheap)
AVAILABLE = _numba_wanted()
_usable: list[bool] = []


def usable() -> bool:
    """True when the compiled kernels can be used: numba is available and its
    import works (checked once; a broken install falls back to numpy)."""
    if not _usable:
        ok = AVAILABLE
        if ok:
            try:
                import numba  # noqa: F401, PLC0415

                _defer_blas_check()
            except Exception:  # noqa: BLE001 - any import failure means: use numpy
                ok = False
        _usable.append(ok)
    return _usable[0]


def _defer_blas_check():
    """Skip numba's eager BLAS probe, which imports ``scipy.linalg`` (~0.25 s,
    a fifth of a whole conversion) while numba loads its numpy support.

    ``numba.np.arraymath`` asks ``ensure_blas()`` once at import, only to choose
    how ``np.dot`` on 1-D arrays is compiled; the kernels here use no BLAS.
    The probe is made to answer "none" for that one import and then restored,
    so ``np.linalg`` in any other compiled code still checks (lazily) as usual.
    """
    import sys  # noqa: PLC0415

    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return  # already decided, or costs nothing more
    from numba.np import linalg  # noqa: PLC0415

    real = linalg.ensure_blas

    def deferred():
        raise ImportError("BLAS probe deferred by ephemesh")

    linalg.ensure_blas = deferred
    try:
        import numba.np.arraymath  # noqa: F401, PLC0415
    finally:
        linalg.ensure_blas = real


def njit(fn):
    """Compile ``fn`` in nopython mode, releasing the GIL, cached on disk when possible."""
    import numba  # noqa: PLC0415

    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location: compile in memory only
        return numba.njit(nogil=True)(fn)


_warmed = []
_warm_lock = threading.Lock()


def warm_up():
    """Load the compiled kernels now (numba's first call costs ~0.3-0.5 s), once
    per process; a no-op without numba.

    The converter calls it while forked workers read the series, so the cost
    overlaps with reading instead of adding to it.
    """
    if not usable():
        return
    with _warm_lock:
        if _warmed:
            return
        _warmed.append(True)
        try:
            from . import marching_kernel, mesh_kernel  # noqa: PLC0415

            marching_kernel.warm_up()
            mesh_kernel.warm_up()
        except Exception:  # noqa: BLE001 - a failed warm-up only costs the time it saves
            return
    # numba leaves ~10^5 long-lived objects; without this the interpreter's
    # final collection walks them all at exit (~0.3 s for a one-shot CLI)
    gc.freeze()
