"""Decoding in throwaway forked processes: a decoder's crash ends the series, not the caller.

Native decoders (GDCM, openjpeg, libjpeg, the RLE decoder) can abort the
process, crash it or raise exceptions that are not ``Exception``s on
malformed streams.  :func:`stream` runs a generator function for each task
in forked children and hands back everything they yield, in task order;
a child that dies (a signal, an abort) becomes ``UnreadableInput``
``corrupt_pixel_data`` and the other children are killed.  Nothing is
pickled on the way in: the children are forks and see the caller's data.

Native decoders print to the standard error stream (GDCM's messages, a Rust
panic's report): in a child it goes to ``/dev/null``, never to the caller's
logs.

Memory: where this process runs under an address-space limit
(``RLIMIT_AS``, as a worker's conversion process does), the headroom left
under it is shared out: this process keeps what the caller reserves for
itself (by default an equal share) and each of ``n`` children may grow by
an equal part of the rest, so a job's reading processes together stay
within the one limit instead of each taking all of it.  Children run ahead by at most a few results each (``_INBOX``, then
the pipe's back pressure), so results do not pile up.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import pickle
import resource
import signal
from collections import deque
from multiprocessing.connection import wait

from .errors import UnreadableInput
from .quiet import silence_pydicom_for_good

CRASHED = ("a decoder crashed on the pixel data (corrupt or hostile codestream)")

_ITEM, _END, _ERROR, _DEAD = 0, 1, 2, 3
#: results a child may have ready before it waits for this process to take them
_INBOX = 4


def stream(fn, tasks: int, workers: int = 1, *, reserve: int | None = None):
    """Yield what ``fn(k)`` (a generator) yields for ``k`` in ``range(tasks)``, in
    order, computed in ``min(workers, tasks)`` forked children.

    ``reserve``: bytes of the address-space headroom this process keeps for
    itself while the children run (the rest is shared by them); None keeps
    an equal share.

    Raises the exception a child raised (pickled back), or
    ``UnreadableInput(corrupt_pixel_data)`` when a child dies.
    """

    if tasks <= 0:
        return
    ctx = mp.get_context("fork")
    n = max(1, min(int(workers), tasks))
    share = _child_share(n, reserve)
    children = []
    try:
        for j in range(n):
            mine, theirs = ctx.Pipe(duplex=False)
            pid = os.fork()
            if pid == 0:  # the child: it never returns from _child
                mine.close()
                _child(fn, range(j, tasks, n), theirs, share)
            theirs.close()  # only the child writes: its death is our end of file
            children.append((pid, mine))
        inbox = [deque() for _ in children]
        for k in range(tasks):
            box = inbox[k % n]
            while True:
                while not box:
                    _collect(children, inbox)
                kind, value = box.popleft()
                if kind == _END:
                    break
                if kind == _ERROR:
                    raise value
                if kind == _DEAD:
                    raise UnreadableInput(CRASHED, code="corrupt_pixel_data")
                yield value
    finally:
        for pid, conn in children:
            conn.close()
            try:
                os.kill(pid, signal.SIGKILL)  # done or not: it has nothing left to say
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _collect(children, inbox) -> None:
    """Read one message from every child that has one and whose inbox is not
    full (a full inbox leaves its child blocked on the pipe: back pressure)."""

    open_ = {conn: j for j, (_, conn) in enumerate(children)
             if len(inbox[j]) < _INBOX and not (inbox[j] and inbox[j][-1][0] == _DEAD)
             and not conn.closed}
    for conn in wait(list(open_)):
        j = open_[conn]
        try:
            inbox[j].append(conn.recv())
        except (EOFError, OSError, pickle.UnpicklingError):
            inbox[j].append((_DEAD, None))  # the child died: its pipe ended


def _child_share(n: int, reserve: int | None = None) -> int | None:
    """The address space each of ``n`` children may add, or None (no limit here):
    the headroom under this process's limit less ``reserve`` (kept here),
    shared equally; an equal share with this process when ``reserve`` is
    None or does not leave the children more."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    now = address_space()
    if now is None:
        return None
    headroom = max(0, soft - now)
    equal = headroom // (n + 1)
    if reserve is None:
        return equal
    return max(equal, (headroom - reserve) // n)


def limit_growth(share: int | None) -> int | None:
    """Let this process grow by at most ``share`` bytes of address space
    (``RLIMIT_AS``; past it allocations fail with ``MemoryError``).  Returns
    the limit set, or None (no share, or the size cannot be read: not Linux)."""
    if share is None:
        return None
    now = address_space()
    if now is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = now + int(share)
    if soft != resource.RLIM_INFINITY:
        limit = min(soft, limit)
    if hard != resource.RLIM_INFINITY:
        limit = min(hard, limit)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def child_share(n: int) -> int | None:
    """What each of ``n`` forked helpers may add under this process's limit
    (an equal share with this process; None where there is no limit)."""
    return _child_share(n)


def address_space() -> int | None:
    """This process's address space in bytes (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _child(fn, ks, conn, share):
    """Run in the child: compute the tasks ``ks``; never return to the caller's code."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
        _silence_stderr()
        silence_pydicom_for_good()  # imports pydicom: before the limit, so the share is the decoder's
        limit_growth(share)
        for k in ks:
            for value in fn(k):
                conn.send((_ITEM, value))
            conn.send((_END, None))
    except BaseException as exc:
        code = 1
        try:
            conn.send((_ERROR, _sendable(exc)))
        except BaseException:
            pass
    finally:
        os._exit(code)


def _silence_stderr():
    """Native decoders write to file descriptor 2 (GDCM's messages, a Rust
    panic's report and backtrace, openjpeg's warnings): in a child they go
    nowhere, so no log sink of the caller receives them; nor does a fatal
    error's Python traceback (``faulthandler``, which writes to a descriptor
    of its own)."""

    faulthandler.disable()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
    finally:
        os.close(devnull)


def _sendable(exc):
    """``exc`` if it survives pickling, else a plain error with no text from it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError("decoding failed in a reading process")
