"""Where the client remembers unfinished uploads, so a re-run continues them.

One small JSON file per unfinished upload under the user's cache directory
(``$XDG_CACHE_HOME/dqrxfer/uploads`` on Linux, or ``$DQRXFER_CACHE_DIR/uploads``:
batch jobs that may run on another host next time point it at a shared
file system), named by a key that hashes
the payload's sha256 and size together with its destination (server, project,
graceid, site, revision, subdir, file name, kind) and how it is sent (one
stream, or N partial uploads).  The same payload sent to the same place by the
same command therefore finds its entry; anything else does not.

An entry holds the upload URL (or the partial uploads' URLs and the final
one).  It is written atomically when an upload is created, and removed when
the upload is finished and verified, or when the server says the upload is
gone (the upload then starts over).  Entries older than :data:`MAX_AGE` are
removed on sight: the server has expired those uploads long ago.

While a process works on an entry it holds an exclusive ``flock`` on a lock
file beside it, so two processes never drive the same upload at once (the
lock dies with its process, so a killed upload never blocks a re-run).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import BusyError

MAX_AGE = 30 * 24 * 3600
FORMAT = 1


def default_directory() -> Path:
    """``$DQRXFER_CACHE_DIR``, else the user's cache directory (platformdirs)."""
    explicit = os.environ.get("DQRXFER_CACHE_DIR")
    if explicit:
        return Path(explicit) / "uploads"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dqrxfer", appauthor=False)) / "uploads"


@dataclass
class ResumeEntry:
    """What is remembered of one unfinished upload."""

    server: str
    size: int
    sha256: str
    url: str | None = None
    partials: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    format: int = FORMAT

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ResumeEntry:
        known = set(cls.__dataclass_fields__)
        # The values are as JSON gave them: this module wrote them, and get()
        # drops an entry it cannot read back.
        return cls(**{key: value for key, value in data.items() if key in known})  # type: ignore[arg-type]


def resume_key(server: str, metadata: Mapping[str, str], size: int, mode: str = "single") -> str:
    """A stable name for (payload, destination, way of sending)."""
    material = json.dumps(
        {"server": server, "metadata": dict(sorted(metadata.items())), "size": size, "mode": mode},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ResumeStore:
    """The directory of resume entries (created on first use, private to the user)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_directory()

    def _ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> ResumeEntry | None:
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            entry = ResumeEntry.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            self.drop(key)  # unreadable: starting over is always safe
            return None
        if entry.format != FORMAT or time.time() - entry.created > MAX_AGE:
            self.drop(key)
            return None
        return entry

    def put(self, key: str, entry: ResumeEntry) -> None:
        self._ensure()
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(entry), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def drop(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    @contextlib.contextmanager
    def lock(self, key: str, what: str) -> Iterator[None]:
        """Hold the entry's lock, or raise :class:`BusyError` if another process does."""
        self._ensure()
        self.prune()
        path = self.directory / f"{key}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(
                    f"{what}: another dqr-upload is sending the same payload to the same "
                    "place right now; wait for it to finish"
                ) from None
            yield
        finally:
            os.close(fd)

    def prune(self) -> None:
        """Remove entries (and lock files) untouched for longer than :data:`MAX_AGE`."""
        now = time.time()
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > MAX_AGE:
                        path.unlink()


@dataclass
class ResumeSlot:
    """One payload's entry in a :class:`ResumeStore`, under ``key``.

    It is read and written only when resuming is on (``enabled``), and
    dropped whatever the setting: a stale entry is never worth keeping.
    """

    store: ResumeStore
    key: str
    enabled: bool = True

    def get(self) -> ResumeEntry | None:
        return self.store.get(self.key) if self.enabled else None

    def remember(self, entry: ResumeEntry) -> None:
        if self.enabled:
            self.store.put(self.key, entry)

    def drop(self) -> None:
        self.store.drop(self.key)
