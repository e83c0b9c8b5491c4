"""What only the service's own user may read: the data directory (0700) and
the SQLite records database (0600; SQLite gives its journal and WAL files
the same mode).

Both are made so from the start, whatever the umask, and checked on every
start: one found open to the group or to other users (made by an older
version, or by hand) is narrowed, with one warning naming the path and the
mode it had.  The access log holds addresses, the audit log pseudonyms, and
the data directory the store, the secret and receipt keys, and the private
Redis's socket.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("ephemesh.private")

DIR_MODE = 0o700
FILE_MODE = 0o600


def _narrow(path: Path, mode: int) -> None:
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & 0o077:
        os.chmod(path, current & mode)
        log.warning("%s was open to other users (mode %04o); it is now %04o", path, current,
                    current & mode)


def private_dir(path) -> Path:
    """Make the directory ``path`` (and its parents) and keep it 0700."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _narrow(path, DIR_MODE)
    return path


def private_file(path) -> Path:
    """Make the file ``path`` (empty) unless it exists, and keep it 0600."""
    path = Path(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    _narrow(path, FILE_MODE)
    return path


def private_database(url: str) -> None:
    """A SQLite ``url``'s file (and its folder) made, and kept 0600; any other
    database is the server's business."""
    if not url.startswith("sqlite"):
        return
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        private_file(path)
