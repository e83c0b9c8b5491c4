"""Configuration from the environment, checked at the door.

=============================  ==============================================
``EPHEMESH_DATA_DIR``          where the SQLite file, the store directory and
                               the private Redis socket live
                               (default ``$XDG_STATE_HOME/ephemesh``, else
                               ``~/.local/state/ephemesh``)
``EPHEMESH_REDIS_URL``         Redis to use; unset: a private redis-server on
                               a unix socket under the data directory
``EPHEMESH_DATABASE_URL``      SQLAlchemy URL; default SQLite in the data dir
``EPHEMESH_STORE``             a directory path or ``redis``; default a
                               directory in memory, ``/dev/shm/ephemesh-``
                               and a digest of the data directory, where
                               /dev/shm is a tmpfs with 1 GiB free; else
                               ``DATA_DIR/store`` (on disk: only by choice
                               or for want of memory; see default_store)
``EPHEMESH_RETENTION_SECONDS`` at most 3600 (the promise); default 3600
``EPHEMESH_ACCESS_LOG_DAYS``   at most 30; default 30
``EPHEMESH_SWEEP_SECONDS``     how often the sweeper runs; default 60 (tests
                               compress the clock with a few seconds)
``EPHEMESH_JOB_MEMORY_MB``     memory one conversion may take beyond its
                               worker's own, its reading processes
                               included (they share it); a job that needs
                               more fails with ``out_of_memory`` instead of
                               waking the kernel's OOM killer.  Default 0:
                               half the machine's memory shared by the
                               pool's workers, at most 4096 MB each (and
                               at least 256 MB)
``EPHEMESH_JOB_THREADS``       threads one conversion uses.  Default 0: the
                               cores shared by the pool's workers (one each
                               when there is a worker per core)
``EPHEMESH_LOG_FORMAT``        ``text`` (default) or ``json``: one JSON
                               object a line (``worker/logs.py``)
=============================  ==============================================

Deadlines: an upload is due for deletion at ``created + retention``, a result
at ``finished + retention``.  The sweeper deletes anything whose deadline
falls before its *next* run, so nothing outlives its deadline by waiting for
a sweep; a deletion after its deadline is recorded as late.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MAX_RETENTION_SECONDS = 3600
MAX_ACCESS_LOG_DAYS = 30
QUEUE = "ephemesh"
MAINTENANCE_QUEUE = "ephemesh-maintenance"
MIB = 1024 * 1024
MIN_JOB_MEMORY_MB = 64
MAX_JOB_MEMORY_MB = 1024 * 1024
#: by default a conversion takes at most this much (a 512×512×1000 CT's volume
#: is 0.5 GB; its mesh and the reading a few times that) …
DEFAULT_JOB_CAP_MB = 4096
#: … and the pool's conversions together at most this share of the machine
JOB_RAM_SHARE = 0.5
#: and never less than this each (a small machine: fewer workers do better)
MIN_DEFAULT_JOB_MB = 256


def physical_memory() -> int:
    """Bytes of RAM (8 GiB where the system cannot say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return 8 * 1024 * MIB


class ConfigError(ValueError):
    """A setting is invalid; the message names it and what is allowed."""


@dataclass(frozen=True)
class Peer:
    """A DICOM node allowed to send to the C-STORE receiver."""

    ae_title: str
    address: str  # an IP address, a host name, or "*" for any

    def allows(self, ae_title: str, address: str) -> bool:
        return ae_title.strip() == self.ae_title and self.address in ("*", address)

    def __str__(self):
        return f"{self.ae_title}@{self.address}"


@dataclass(frozen=True)
class Destination:
    """Where models made from a PACS's series go back."""

    scheme: str  # "dicom" (C-STORE) or "http"/"https" (STOW-RS)
    ae_title: str = ""  # dicom: the called AE title
    host: str = ""
    port: int = 0
    url: str = ""  # http(s): the STOW-RS URL, credentials included

    @property
    def setting(self) -> str:
        """The value of ``EPHEMESH_RETURN_TO`` that gives this destination."""
        if self.scheme == "dicom":
            return f"dicom://{self.ae_title}@{self.host}:{self.port}"
        return self.url

    def __str__(self):  # for messages: never a password
        from urllib.parse import urlsplit, urlunsplit

        if self.scheme == "dicom":
            return self.setting
        p = urlsplit(self.url)
        netloc = p.hostname + (f":{p.port}" if p.port else "")
        return urlunsplit((p.scheme, netloc, p.path, "", ""))


def _ae_title(value, name) -> str:
    value = value.strip()
    if not 0 < len(value) <= 16 or not all(32 <= ord(c) < 127 and c != "\\" for c in value):
        raise ConfigError(f"{name}: an AE title is 1 to 16 printable ASCII characters, "
                          f"got {value!r}")
    return value


def parse_peers(raw: str) -> tuple[Peer, ...]:
    """``EPHEMESH_SCP_PEERS``: ``AE@address`` entries, comma or space separated."""
    peers = []
    for entry in raw.replace(",", " ").split():
        ae, at, address = entry.rpartition("@")
        if not at or not ae or not address:
            raise ConfigError("EPHEMESH_SCP_PEERS entries are AE@address (AE@* for any "
                              f"address), got {entry!r}")
        peers.append(Peer(_ae_title(ae, "EPHEMESH_SCP_PEERS"), address))
    return tuple(peers)


def parse_destination(raw: str) -> Destination | None:
    """``EPHEMESH_RETURN_TO``: ``dicom://AE@host:port`` or an http(s) STOW-RS URL."""
    from urllib.parse import urlsplit

    raw = raw.strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme in ("http", "https") and parts.hostname:
        return Destination(parts.scheme, url=raw)
    if parts.scheme == "dicom":
        ae, at, _ = parts.netloc.rpartition("@")
        try:
            port = parts.port
        except ValueError:
            port = None
        if at and ae and parts.hostname and port:
            return Destination("dicom", _ae_title(ae, "EPHEMESH_RETURN_TO"),
                               parts.hostname, port)
    raise ConfigError("EPHEMESH_RETURN_TO must be dicom://AE@host:port or an http(s) STOW-RS "
                      f"URL, got {raw!r}")


def _int_setting(env, name, default, lo, hi):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {value}")
    return value


def _job_memory_setting(env) -> int:
    value = _int_setting(env, "EPHEMESH_JOB_MEMORY_MB", 0, 0, MAX_JOB_MEMORY_MB)
    if 0 < value < MIN_JOB_MEMORY_MB:
        raise ConfigError(f"EPHEMESH_JOB_MEMORY_MB must be 0 (a share of the machine's memory) "
                          f"or from {MIN_JOB_MEMORY_MB} to {MAX_JOB_MEMORY_MB}, got {value}")
    return value


#: where the default store goes when it is a tmpfs with room enough
SHM = Path("/dev/shm")
MIN_SHM_FREE = 1 << 30


def default_store(data_dir: Path, shm: Path = SHM) -> str:
    """The store unless ``EPHEMESH_STORE`` says otherwise: memory-backed
    (``/dev/shm/ephemesh-<12 hex of the data directory's SHA-256>``, so two
    installations never share one) where ``shm`` is a tmpfs with at least
    ``MIN_SHM_FREE`` bytes free, else ``DATA_DIR/store`` on disk."""
    import hashlib

    from .store import medium

    try:
        usage = os.statvfs(shm)
        room = usage.f_bavail * usage.f_frsize
    except OSError:
        room = 0
    if room >= MIN_SHM_FREE and medium(shm) == "memory":
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
        return str(shm / f"ephemesh-{digest}")
    return str(data_dir / "store")


def _log_format_setting(env) -> str:
    from .logs import log_format

    return log_format(env)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    redis_url: str | None
    database_url: str
    store: str  # a directory path, or "redis"
    retention_seconds: int
    access_log_days: int
    sweep_seconds: int = 60
    job_memory_mb: int = 0  # 0: a share of the machine's memory (see job_memory)
    job_threads: int = 0  # 0: a share of the machine's cores (see threads)
    queue: str = QUEUE
    maintenance_queue: str = MAINTENANCE_QUEUE
    scp_port: int = 0  # 0: serve runs no C-STORE receiver
    scp_ae: str = "EPHEMESH"
    scp_peers: tuple = ()  # Peer
    scp_idle_seconds: int = 30
    return_to: Destination | None = None
    log_format: str = "text"  # or "json" (worker/logs.py)

    @classmethod
    def from_env(cls, environ=None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = env.get("EPHEMESH_DATA_DIR")
        if not data_dir:
            state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
            data_dir = str(Path(state) / "ephemesh")
        data_dir = Path(data_dir).absolute()
        store = env.get("EPHEMESH_STORE") or default_store(data_dir)
        if store != "redis":
            store = str(Path(store).absolute())
        return cls(
            data_dir=data_dir,
            redis_url=env.get("EPHEMESH_REDIS_URL") or None,
            database_url=env.get("EPHEMESH_DATABASE_URL") or f"sqlite:///{data_dir / 'ephemesh.db'}",
            store=store,
            retention_seconds=_int_setting(env, "EPHEMESH_RETENTION_SECONDS",
                                           MAX_RETENTION_SECONDS, 1, MAX_RETENTION_SECONDS),
            access_log_days=_int_setting(env, "EPHEMESH_ACCESS_LOG_DAYS",
                                         MAX_ACCESS_LOG_DAYS, 1, MAX_ACCESS_LOG_DAYS),
            sweep_seconds=_int_setting(env, "EPHEMESH_SWEEP_SECONDS", 60, 1, 300),
            job_memory_mb=_job_memory_setting(env),
            job_threads=_int_setting(env, "EPHEMESH_JOB_THREADS", 0, 0, 64),
            scp_port=_int_setting(env, "EPHEMESH_SCP_PORT", 0, 0, 65535),
            scp_ae=_ae_title(env.get("EPHEMESH_SCP_AE") or "EPHEMESH", "EPHEMESH_SCP_AE"),
            scp_peers=parse_peers(env.get("EPHEMESH_SCP_PEERS") or ""),
            scp_idle_seconds=_int_setting(env, "EPHEMESH_SCP_IDLE_SECONDS", 30, 1, 3600),
            return_to=parse_destination(env.get("EPHEMESH_RETURN_TO") or ""),
            log_format=_log_format_setting(env),
        )

    @property
    def redis_socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        """The configured Redis, or the private one's unix socket."""
        return self.redis_url or f"unix://{self.redis_socket}"

    @property
    def job_timeout(self) -> int:
        """A conversion may run at most this long (well inside the retention)."""
        return max(1, min(900, self.retention_seconds // 2))

    @property
    def sweep_margin(self) -> float:
        """How long before its deadline the sweeper may delete a thing: one
        sweep period plus slack, so a thing is never left waiting past its
        deadline for the next sweep; at most a quarter of the retention."""
        return min(self.sweep_seconds * 1.5 + 5, self.retention_seconds / 4)

    def job_memory(self, workers: int = 1) -> int:
        """Bytes one conversion may take beyond its worker's own (its horse's
        address space, shared with the horse's reading processes): the
        setting, or ``JOB_RAM_SHARE`` of physical memory shared by
        ``workers``, capped at ``DEFAULT_JOB_CAP_MB`` (at least
        ``MIN_DEFAULT_JOB_MB``).  The rest of the machine stays for the
        store and Redis (memory too), the web and the operating system."""
        if self.job_memory_mb:
            return self.job_memory_mb * MIB
        share = int(physical_memory() * JOB_RAM_SHARE) // max(1, int(workers))
        return max(MIN_DEFAULT_JOB_MB * MIB, min(DEFAULT_JOB_CAP_MB * MIB, share))

    def threads(self, workers: int = 1) -> int:
        """Threads one conversion uses: the setting, or the cores shared by ``workers``."""
        if self.job_threads:
            return self.job_threads
        return max(1, min(64, (os.cpu_count() or 1) // max(1, workers)))

    def as_env(self) -> dict:
        """The settings as environment variables (for child processes)."""
        return {
            "EPHEMESH_DATA_DIR": str(self.data_dir),
            "EPHEMESH_REDIS_URL": self.effective_redis_url,
            "EPHEMESH_DATABASE_URL": self.database_url,
            "EPHEMESH_STORE": self.store,
            "EPHEMESH_RETENTION_SECONDS": str(self.retention_seconds),
            "EPHEMESH_ACCESS_LOG_DAYS": str(self.access_log_days),
            "EPHEMESH_SWEEP_SECONDS": str(self.sweep_seconds),
            "EPHEMESH_JOB_MEMORY_MB": str(self.job_memory_mb),
            "EPHEMESH_JOB_THREADS": str(self.job_threads),
            "EPHEMESH_SCP_PORT": str(self.scp_port),
            "EPHEMESH_SCP_AE": self.scp_ae,
            "EPHEMESH_SCP_PEERS": ",".join(map(str, self.scp_peers)),
            "EPHEMESH_SCP_IDLE_SECONDS": str(self.scp_idle_seconds),
            "EPHEMESH_RETURN_TO": self.return_to.setting if self.return_to else "",
            "EPHEMESH_LOG_FORMAT": self.log_format,
        }
