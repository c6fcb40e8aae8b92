"""Where uploads live: :class:`FileStore`, the :class:`~.datastore.Store`
of files on a POSIX filesystem (local or shared).

Layout of :class:`FileStore`'s directory, for an upload ``<id>``:

``<id>``
    the data file: the bytes received so far;
``<id>.info``
    its state (JSON: length, metadata, concatenation, ...), replaced atomically;
``<id>.done``
    the same state file, renamed once ``post_finish`` has run: a rename marks
    the upload completed atomically without creating a file;
``<id>.pending``
    present only while a checksummed chunk is being written: the offset the
    chunk started at;
``links/<partial-id>/<final-id>``
    a final upload of the concatenation extension waiting for an unfinished
    partial upload;
``owners/<owner-hash>/<id>``
    a name per upload in progress, under a hash of its owner, so that the
    cap on an owner's unfinished bytes reads the state of one owner's uploads
    only (:meth:`FileStore.unfinished_upload_ids`): a hard link to the
    upload's state file as it was created when its length is known (a name,
    no new file: creating a file cost 0.2 to 0.6 ms of CPU on an ext4 disk
    where a link cost 8 µs), a file of its own when its length is deferred
    (holding the length a PATCH in flight reserved), or wherever links cannot
    be made.  Only the name counts, and a deferred length's content.  A hint
    is removed *before* the upload completes or is removed, so a listed hint
    means neither has happened yet (what :mod:`.tally` relies on), and by
    :meth:`FileStore.unfinished_upload` when it finds the upload gone or
    completed (a hint a crash left).

The offset of an upload is never stored: it is the size of its data file
(or, while a ``.pending`` marker exists, the offset the marker names).  After
a crash the offset a HEAD reports therefore never counts bytes that are not in
the data file, and bytes that reached the file before a dropped connection
count, so a resume re-sends only what never arrived.  A checksummed chunk is
all or nothing: until it is verified the marker hides it, and whoever next
writes to the upload cuts an unverified remainder away.

State files and markers are always replaced atomically (temporary file +
rename), so a reader sees the old state or the new one.  When they and the
data reach the disk is the fsync policy (``fsync=``):

``"complete"`` (the default)
    a finished upload's data file is fsynced before ``post_finish`` runs and
    before the last PATCH is answered (with its state file and directory, all
    at once: :mod:`.syncing`): what the server takes over from the
    client (which then forgets the upload) survives a power loss.  Offsets
    acknowledged before that are not fsynced one by one: after a power loss
    the offset may be lower than the client was told, and tus clients ask
    (HEAD, or a 409 followed by HEAD) and re-send the difference.  The kernel
    is asked to start writing received blocks at once (``sync_file_range``), so
    the final fsync waits only for the last ones.  State files are fsynced at
    creation of a length and at completion only where the protocol cannot
    re-derive them (a declared length, a concatenated final upload).
``"always"``
    also every PATCH's data before it is answered, and every state file and
    marker (with a directory fsync): an acknowledged offset survives a power
    loss.  One fsync per request.
``"never"``
    nothing is fsynced: a power loss may lose even a finished upload.  For
    tests, scratch servers and filesystems that are durable on close.

A killed process (``kill -9``) loses nothing under any policy: the bytes are
in the page cache and the offset is read from the file.  After a power loss
the offset never counts bytes that are not in the data file: it is the file's
size, and ext4 (``data=ordered``) and XFS write a file's data before its new
size.  A state file a power loss left unreadable makes its upload unknown
(404): the client starts over.

The expiry time of an upload is derived the same way, from the modification
time of its data file (see :mod:`.expiration`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import errors
from .datastore import Reader, UploadInfo, new_upload_id, valid_id
from .digest import Feeder, RunningDigests
from .fsyncpolicy import FSYNC_ALWAYS, FSYNC_COMPLETE, FSYNC_NEVER, fsync_policy
from .syncing import fsync_directory, fsync_together

#: Size of the blocks a request body is copied to disk in.  Bounded memory per
#: request, whatever the chunk size a client chooses; large enough that the
#: per-block Python work (one read, one write, one hash update) is negligible.
BLOCK_SIZE = 4 * 1024 * 1024

#: Received bytes are handed to the kernel's writeback in runs of this size
#: (fsync policy ``complete``), so that finishing an upload waits for little.
WRITEBACK_SIZE = 8 * 1024 * 1024

log = logging.getLogger("dqrxfer.tus")


def write_json_atomically(path: Path, data: object, durable: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename;
    ``durable``: fsync the file before the rename and the directory after."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data))
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE)``: start
    writing a range of a file to disk without waiting (Linux; the ``os``
    module does not offer it).  None where it is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    write = 2  # SYNC_FILE_RANGE_WRITE

    def start_writeback(fd: int, offset: int, count: int) -> None:
        # Advisory: on failure (EINVAL on some filesystems) the final fsync
        # simply has more to do.
        function(fd, offset, count, write)

    return start_writeback


_start_writeback = _load_sync_file_range()


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


#: Why ``os.link`` may fail where creating a file would not: the filesystem
#: makes no hard links, or the file has as many as it allows.
_NO_LINK = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS})


def _add_hint(path: str, state: str | None) -> None:
    """An owner's hint at ``path``: a hard link to ``state`` if given and
    links can be made there, else an empty file."""
    if state is not None:
        try:
            os.link(state, path)
            return
        except FileExistsError:
            return
        except OSError as error:
            if error.errno not in _NO_LINK:
                raise
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _changed_since(path: str, moment: float) -> bool:
    """Whether ``path`` exists and was changed at or after ``moment``."""
    try:
        return os.lstat(path).st_mtime >= moment
    except FileNotFoundError:
        return False


def _read_small(path: str) -> bytes:
    """The whole content of a small file (a state file, a marker): plain
    system calls, without the buffered file object ``open`` builds (whose
    own ``fstat`` and ``ioctl`` calls cost more than the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while block := os.read(fd, 65536):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def _create_exclusive(path: str) -> int:
    """A new file's descriptor, open for writing (``open(path, "x")``)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)


def _write_all(fd: int, block: bytes) -> None:
    view = memoryview(block)
    while view:
        done = os.write(fd, view)
        view = view[done:]


class FileStore:
    """Uploads as files in one directory (local or a shared POSIX filesystem).

    ``fsync``: the policy, see the module docstring.  ``running_sha256``:
    compute each upload's SHA-256 while its bytes arrive, for
    :meth:`known_sha256` (see :mod:`.digest`): the
    :class:`~.datastore.HashingStore` capability.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fsync: str | bool = FSYNC_COMPLETE,
        running_sha256: bool = False,
    ) -> None:
        self.directory = Path(directory)
        # Only the server's user reads uploads in progress (a link planted in a
        # report tree toward them must not make a front end serve them).
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.links = self.directory / "links"
        self._root = os.fspath(self.directory)
        self.fsync_policy = fsync_policy(fsync)
        #: running SHA-256 of uploads as they arrive (``running_sha256=True``)
        self.digests: RunningDigests | None = RunningDigests() if running_sha256 else None
        #: fsync every write before it is acknowledged
        self.sync_each = self.fsync_policy == FSYNC_ALWAYS
        #: fsync a finished upload before it is handed over
        self.sync_finished = self.fsync_policy != FSYNC_NEVER

    # -- paths -------------------------------------------------------------

    def data_path(self, upload_id: str) -> Path:
        if not valid_id(upload_id):
            raise errors.not_found()
        return self.directory / upload_id

    # The per-request paths as plain strings (pathlib costs more than the
    # system calls on small uploads).

    def _file(self, upload_id: str, suffix: str = "") -> str:
        if not valid_id(upload_id):
            raise errors.not_found()
        return f"{self._root}/{upload_id}{suffix}"

    def _info_path(self, upload_id: str) -> str:
        return self._file(upload_id, ".info")

    def _done_path(self, upload_id: str) -> str:
        return self._file(upload_id, ".done")

    def _pending_path(self, upload_id: str) -> str:
        return self._file(upload_id, ".pending")

    # -- reading -----------------------------------------------------------

    def get(self, upload_id: str) -> UploadInfo:
        try:
            state = self._read_state(upload_id)
            stat = os.stat(self._file(upload_id))
        except FileNotFoundError:
            raise errors.not_found() from None
        except ValueError:
            # Only a power loss under a relaxed fsync policy leaves a state
            # file unreadable; the upload cannot be trusted, the client
            # starts over (``cleanup`` removes it when it expires).
            log.warning("upload %s: unreadable state file, treated as gone", upload_id)
            raise errors.not_found() from None
        offset = stat.st_size
        pending = self._read_pending(upload_id)
        if pending is not None:
            offset = min(offset, pending)
        return UploadInfo.from_json(state, offset, stat.st_mtime)

    def _read_state(self, upload_id: str) -> dict[str, object]:
        """The state file's content, with ``completed`` from its name."""
        try:
            state: dict[str, object] = json.loads(_read_small(self._info_path(upload_id)))
        except FileNotFoundError:
            state = json.loads(_read_small(self._done_path(upload_id)))
            state["completed"] = True
        return state

    def upload_ids(self) -> Iterator[str]:
        """Every upload in the store (for housekeeping)."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                stem, dot, suffix = entry.name.partition(".")
                if dot and suffix in ("info", "done") and valid_id(stem):
                    yield stem

    def unfinished_upload_ids(self, owner: str | None) -> list[str]:
        """The owner's uploads in progress as its hints list them (one
        directory read): uploads whose ``post_finish`` has not run, and
        hints of uploads a crash or a race left behind (see
        :meth:`unfinished_upload`).  Never anyone else's."""
        try:
            names = os.listdir(self._owner_dir(owner))
        except FileNotFoundError:
            return []
        return [name for name in names if valid_id(name)]

    def unfinished_upload(self, owner: str | None, upload_id: str) -> UploadInfo | None:
        """The state of one of :meth:`unfinished_upload_ids`, of deferred
        length with its ``reserved``; None if it does not count for the owner:
        its hint is removed if the upload is gone (terminated, expired and
        swept, or a state file a power loss tore) or completed."""
        hint = f"{self._owner_dir(owner)}/{upload_id}"
        try:
            info = self.get(upload_id)
        except errors.TusError:
            _remove(hint)
            return None
        if info.completed:
            _remove(hint)
            return None
        if info.owner != owner:
            return None  # two owners' names with the same hash
        if info.length is None:  # only a deferred length counts a reservation
            info.reserved = _read_reservation(hint)
        return info

    def reserve(self, info: UploadInfo, up_to: int) -> None:
        """The reservation lives in the owner's hint of the upload (not
        fsynced: after a crash it is gone with the request it was for)."""
        path = f"{self._owner_dir(info.owner)}/{info.id}"
        try:
            write_json_atomically(Path(path), up_to, durable=False)
        except FileNotFoundError:
            pass  # the upload has no hint (it could not be written): it is not counted
        except OSError as error:
            if not errors.is_out_of_space(error):
                raise
            log.warning("upload %s: reservation not recorded (%s)", info.id, errors.brief(error))

    def _owner_dir(self, owner: str | None) -> str:
        key = hashlib.blake2b((owner or "").encode(), digest_size=16).hexdigest()
        return f"{self._root}/owners/{key}"

    def _note_owner(self, info: UploadInfo) -> None:
        """Add the upload (which exists) to its owner's hints.  Not fsynced,
        and not an error when it fails (a full disk): a hint lost only leaves
        the upload uncounted."""
        path = f"{self._owner_dir(info.owner)}/{info.id}"
        # A known length reserves nothing: its hint is a second name of the
        # state file (whose content the hint's readers never look at).
        state = self._info_path(info.id) if info.length is not None else None
        try:
            try:
                _add_hint(path, state)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _add_hint(path, state)
        except OSError as error:
            log.warning("upload %s: not counted for its owner (%s)", info.id, error)

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Remove temporary files (of writes a crash interrupted) last changed
        before the POSIX time ``older_than``; returns how many."""
        removed = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < older_than:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def remove_leftovers(self, older_than: float) -> list[str]:
        """Remove what a crash (or a full disk, before it was handled) left of
        uploads that cannot be used, last changed before the POSIX time
        ``older_than``; returns the ids.

        A leftover is a data file without a state file, a state file without
        a data file, an unreadable state file (with its data), and markers
        or concatenation links of uploads that are gone.  ``get`` answers 404
        for each, so nobody can resume or expire them: only this removes
        them.  The age keeps away from a creation in progress (the data file
        exists a moment before its state file).
        """
        names = set(os.listdir(self.directory))
        removed: list[str] = []
        for name in sorted(names):
            stem, _, suffix = name.partition(".")
            if not valid_id(stem) or suffix not in ("", "info", "done", "pending"):
                continue
            if stem in removed or not self._is_leftover(stem, names):
                continue
            paths = [self._file(stem, end) for end in ("", ".info", ".done", ".pending")]
            if any(_changed_since(path, older_than) for path in paths):
                continue
            for path in paths[1:] + paths[:1]:  # state first: then the upload is invisible
                _remove(path)
            if self.digests is not None:
                self.digests.forget(stem)
            removed.append(stem)
        removed += self._remove_dangling_links(older_than)
        return removed

    def _is_leftover(self, upload_id: str, names: set[str]) -> bool:
        has_state = f"{upload_id}.info" in names or f"{upload_id}.done" in names
        if not has_state or upload_id not in names:
            return True
        try:
            self._read_state(upload_id)
        except FileNotFoundError:
            return False  # completed or removed meanwhile: not ours to judge
        except ValueError:
            return True
        return False

    def _remove_dangling_links(self, older_than: float) -> list[str]:
        """``links/<partial-id>`` of partial uploads that are gone."""
        try:
            entries = list(os.scandir(self.links))
        except FileNotFoundError:
            return []
        removed = []
        for entry in entries:
            if not valid_id(entry.name) or _changed_since(entry.path, older_than):
                continue
            if not (
                os.path.exists(self._info_path(entry.name))
                or os.path.exists(self._done_path(entry.name))
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def _read_pending(self, upload_id: str) -> int | None:
        try:
            return int(_read_small(self._pending_path(upload_id)))
        except FileNotFoundError:
            return None
        except ValueError:
            # A marker torn by a crash: its chunk started no later than the
            # data file's size at that time, which we no longer know; zero is
            # safe (the client re-sends) and cannot happen with fsync on.
            return 0

    # -- changing ----------------------------------------------------------

    def create(self, info: UploadInfo) -> UploadInfo:
        """Create the data file first, then the state file that makes it visible.

        The state file is written in place, not renamed into place: until this
        returns nobody knows the upload's URL, so a crash that tears the file
        hides an upload that was never acknowledged (``get`` says 404).
        """
        if not info.id:
            info.id = new_upload_id()
        data = self._file(info.id)
        made: list[str] = []  # what this call created: removed again if it fails
        # Plain system calls: the file objects ``open`` builds cost more than
        # these (their own fstat, ioctl and lseek calls included).
        try:
            fd = _create_exclusive(data)
            made.append(data)
            try:
                if self.sync_each:
                    os.fsync(fd)
                modified = os.fstat(fd).st_mtime
            finally:
                os.close(fd)
            state = self._info_path(info.id)
            fd = _create_exclusive(state)
            made.append(state)
            try:
                _write_all(fd, json.dumps(info.to_json()).encode("utf-8"))
                if self.sync_each:
                    os.fsync(fd)
                elif self.sync_finished:
                    # On its way to the disk now, so that the fsync when the upload
                    # finishes has nothing left to write (one journal commit, not two).
                    self._start_writeback(fd, 0, 0)
            finally:
                os.close(fd)
            if self.sync_each:
                fsync_directory(self.directory)
        except BaseException:
            # A full disk fails the state file's write: no empty data file or
            # torn state file stays behind (state first: it makes it visible).
            for path in reversed(made):
                _remove(path)
            raise
        self._note_owner(info)
        info.offset = 0
        info.modified = modified
        return info

    def write(
        self,
        upload_id: str,
        offset: int,
        read: Reader,
        limit: int,
        verify: Callable[[], None] | None = None,
    ) -> int:
        """Append what ``read`` yields at ``offset``, at most ``limit`` bytes.

        Bytes go to the data file as they arrive, in blocks of at most
        :data:`BLOCK_SIZE`.  If ``read`` raises (the client went away), what
        was written stays and the exception propagates.  A body longer than
        ``limit`` is refused with 413 before the excess is written, and the
        chunk is cut away.

        With ``verify`` the write is all or nothing: a marker hides the chunk
        from :meth:`get` until ``verify()`` (called after the body ended)
        returns; if it or ``read`` raises, the chunk is cut away.

        Returns the number of bytes written.
        """
        data = self._file(upload_id)
        self._discard_unverified(upload_id)
        atomic = verify is not None
        if atomic:
            self._write_marker(upload_id, offset)
        written = 0
        digest = self.digests.start(upload_id, offset) if self.digests else None
        catch_up = None
        if digest is None and self.digests is not None and offset > 0:
            # No hash of this upload at this offset here: one that reads the
            # bytes below it first (see digest.py).
            digest, catch_up = hashlib.sha256(), (data, offset)
        feeder = Feeder(digest, catch_up) if digest is not None else None
        # The hash at the offset (None while it catches up: see _keep_digest).
        before = digest.copy() if digest is not None and catch_up is None else None
        kept: int | None = None  # the offset the file is left at, if known
        fd = os.open(data, os.O_WRONLY)
        try:
            try:
                os.lseek(fd, offset, os.SEEK_SET)
                flushed = 0  # bytes of this request handed to writeback
                while True:
                    # Ask for one byte more than fits: a body longer than the
                    # limit is detected before its excess reaches the file.
                    block = read(min(BLOCK_SIZE, limit - written + 1))
                    if not block:
                        break
                    if len(block) > limit - written:
                        raise errors.too_large("request body", limit)
                    try:
                        _write_all(fd, block)
                    except OSError:
                        # A full disk took part of the block: those bytes stay.
                        stored = os.lseek(fd, 0, os.SEEK_CUR) - offset - written
                        if stored > 0:
                            written += stored
                            if feeder is not None:
                                feeder.feed(block[:stored])
                        raise
                    written += len(block)
                    if feeder is not None:
                        feeder.feed(block)
                    if written - flushed >= WRITEBACK_SIZE and self.sync_finished:
                        self._start_writeback(fd, offset + flushed, written - flushed)
                        flushed = written
                if verify is not None:
                    verify()
                kept = offset + written
            except errors.TusError:
                os.ftruncate(fd, offset)
                kept = offset
                raise
            except BaseException:
                if atomic:
                    os.ftruncate(fd, offset)
                    kept = offset
                elif isinstance(sys.exception(), Exception):
                    kept = offset + written  # the client went away, the disk is full: they stay
                raise
            finally:
                if self.sync_each:
                    os.fsync(fd)
        finally:
            os.close(fd)
            if atomic:
                _remove(self._pending_path(upload_id))
            if feeder is not None:
                self._keep_digest(upload_id, feeder, before, offset, kept)
        return written

    def _keep_digest(
        self, upload_id: str, feeder: Feeder, before: Any, offset: int, kept: int | None
    ) -> None:
        """Put the running hash back at the offset the file was left at.
        Its last block may still be hashing: the request is answered meanwhile
        (the entry waits for it, see :class:`~.digest.RunningDigests`)."""
        assert self.digests is not None
        try:
            if kept is not None and kept != offset:
                self.digests.keep(upload_id, kept, feeder.digest, feeder.unsettled())
                return
            feeder.wait()
        except Exception:  # a catch-up that found the file short (hashlib does not fail)
            return
        if kept == offset:
            if before is None:
                before = feeder.at_start()  # the hash caught up from the file
            self.digests.keep(upload_id, offset, before)

    def known_sha256(self, upload_id: str) -> str | None:
        """The SHA-256 of the upload's data as computed while it arrived in
        this process, if that covers the whole data file; None otherwise
        (then read the file).  See :mod:`.digest`."""
        if self.digests is None:
            return None
        try:
            size = os.stat(self._file(upload_id)).st_size
        except FileNotFoundError:
            return None
        return self.digests.hexdigest(upload_id, size)

    def forget_sha256(self, upload_id: str) -> None:
        """Drop the upload's running SHA-256 (its finished data was handed over)."""
        if self.digests is not None:
            self.digests.forget(upload_id)

    @staticmethod
    def _start_writeback(fd: int, offset: int, count: int) -> None:
        if _start_writeback is not None:
            _start_writeback(fd, offset, count)

    def make_durable(self, upload_id: str, with_state: bool = True) -> None:
        """Put a finished upload's data (and, ``with_state``, its state file
        and directory entries) on disk, unless the policy is ``never``;
        called before the upload is handed over to ``post_finish`` and the
        client is told it is complete."""
        if not self.sync_finished or self.sync_each:
            return  # "always" has synced every write already
        # Called before mark_completed: the state file is still <id>.info.
        # Data, state and directory in no particular order: all three at once.
        if with_state:
            fsync_together([self._file(upload_id), self._info_path(upload_id)], [self.directory])
        else:
            fsync_together([self._file(upload_id)])

    def _write_marker(self, upload_id: str, offset: int) -> None:
        path = self._pending_path(upload_id)
        if self.sync_each:
            write_json_atomically(Path(path), offset)
            return
        try:
            with open(path, "w", encoding="ascii") as handle:
                handle.write(str(offset))
        except BaseException:
            # An empty marker (disk full) would read as offset 0.
            _remove(path)
            raise

    def _discard_unverified(self, upload_id: str) -> None:
        """Cut away a checksummed chunk a crash left unverified (lock held)."""
        pending = self._read_pending(upload_id)
        if pending is None:
            return
        data = self._file(upload_id)
        if os.stat(data).st_size > pending:
            os.truncate(data, pending)
        _remove(self._pending_path(upload_id))

    def declare_length(self, info: UploadInfo, length: int) -> None:
        """Set the length of an upload created with ``Upload-Defer-Length``."""
        info.length = length
        write_json_atomically(Path(self._info_path(info.id)), info.to_json())

    def mark_completed(self, info: UploadInfo) -> None:
        """Record that ``post_finish`` ran, by renaming the state file to
        ``<id>.done``.  Not durable unless the policy is ``always``: if a
        power loss takes the rename, the (idempotent) hook runs again."""
        # The owner's hint first: a listed hint means the upload counts
        # (see .tally); a crash in between leaves it uncounted, finished.
        _remove(f"{self._owner_dir(info.owner)}/{info.id}")
        try:
            os.rename(self._info_path(info.id), self._done_path(info.id))
        except FileNotFoundError:
            if not os.path.exists(self._done_path(info.id)):
                raise errors.not_found() from None
        if self.sync_each:
            fsync_directory(self.directory)
        info.completed = True

    def terminate(self, upload_id: str) -> None:
        """Remove the upload: its owner's hint first (a listed hint means the
        upload counts: see :mod:`.tally`), then the state (the upload is then
        invisible), then data and, for a final upload, the links that say it
        waits for its partial uploads."""
        try:
            info: UploadInfo | None = self.get(upload_id)
        except errors.TusError:
            info = None
        if info is not None:
            owner_hint = f"{self._owner_dir(info.owner)}/{upload_id}"
            _remove(owner_hint)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(owner_hint))  # only when it was the last one
        for suffix in (".info", ".done", "", ".pending"):
            _remove(self._file(upload_id, suffix))
        self.forget_sha256(upload_id)
        shutil.rmtree(self.links / upload_id, ignore_errors=True)
        for partial_id in info.partials if info is not None else []:
            self.unlink_final(partial_id, upload_id)
        if self.sync_each:
            fsync_directory(self.directory)

    # -- concatenation -----------------------------------------------------

    def link_final(self, partial_id: str, final_id: str) -> None:
        """Remember that ``final_id`` waits for the unfinished ``partial_id``."""
        directory = self.links / self.data_path(partial_id).name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self.data_path(final_id).name).touch()

    def finals_waiting_for(self, partial_id: str) -> list[str]:
        try:
            names = os.listdir(self.links / self.data_path(partial_id).name)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if valid_id(name))

    def unlink_final(self, partial_id: str, final_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.links / partial_id / final_id).unlink()

    def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        """Fill the final upload's data file with the partials' data, atomically.

        The concatenation is built beside the data file and renamed over it,
        so the final upload's offset jumps from 0 to its length in one step.
        A final upload made of one partial upload gets the partial's data file
        itself: a hard link, made and renamed into place in no time whatever
        the size (a finished partial upload is never written again, and
        removing it later removes only its own name).  Where the filesystem
        refuses the link, its bytes are copied as several partials' are.
        Under the policies that fsync a finished upload, the result is fsynced
        before the rename either way.
        """
        target = self.data_path(final.id)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            if not (len(partials) == 1 and self._link_data(partials[0], tmp)):
                with open(tmp, "xb") as out:
                    for partial in partials:
                        with open(self.data_path(partial.id), "rb") as source:
                            _copy_range(source.fileno(), out.fileno(), partial.offset)
            if self.sync_finished:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.sync_finished:
            fsync_directory(self.directory)
        for partial in partials:
            self.unlink_final(partial.id, final.id)
        if self.digests is not None and len(partials) == 1:
            # The same bytes: the final upload's digest is the partial's.
            entry = self.digests.start(partials[0].id, partials[0].offset)
            if entry is not None:
                self.digests.keep(partials[0].id, partials[0].offset, entry)
                self.digests.keep(final.id, partials[0].offset, entry.copy())

    def _link_data(self, partial: UploadInfo, tmp: Path) -> bool:
        """Hard-link ``partial``'s data file as ``tmp``; False where the
        filesystem cannot (the caller copies instead)."""
        source = self.data_path(partial.id)
        if source.stat().st_size != partial.offset:
            return False  # more bytes than the finished offset: copy exactly those
        try:
            os.link(source, tmp)
        except OSError as error:
            if error.errno not in _NO_LINK:
                raise
            log.info("upload %s: partial upload not hard-linked (%s); copying", partial.id, error)
            return False
        return True


#: What ``link(2)`` answers where a filesystem does not do hard links (or not
#: here): another device, not permitted, too many links, not supported.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})


def _copy_range(source: int, target: int, count: int) -> None:
    """Copy ``count`` bytes from the start of ``source`` to ``target``'s position."""
    copied = 0
    try:
        while copied < count:
            done = os.copy_file_range(source, target, count - copied, copied)
            if done == 0:
                break
            copied += done
    except OSError:
        os.lseek(source, copied, os.SEEK_SET)
        while copied < count:
            block = os.read(source, min(BLOCK_SIZE, count - copied))
            if not block:
                break
            _write_all(target, block)
            copied += len(block)
    if copied != count:
        raise OSError(f"partial upload ended after {copied} of {count} bytes")


def _read_reservation(path: str) -> int:
    """The length recorded in an owner's hint (0: none, or unreadable)."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
