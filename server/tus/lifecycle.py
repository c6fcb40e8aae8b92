"""What happens to an upload beyond the bytes of one request: finishing,
concatenation, crash recovery and expiry.

Used by the HTTP handlers (:mod:`.blueprint`) and by housekeeping
(``dqrxfer-server cleanup``), so both follow the same rules.  Every change to
an upload happens with its lock held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from . import errors
from .datastore import Store, UploadInfo
from .expiration import is_expired
from .hooks import TusHooks
from .locker import Hold, Locker
from .metrics import TusMetrics
from .tally import UnfinishedTally

log = logging.getLogger("dqrxfer.tus")

#: Temporary files older than this (seconds) were left by a crash: no write
#: (state file, concatenation of a final upload) takes a day.
STALE_TEMPORARY_AGE = 24 * 3600
#: An upload's remains that no request can use (a data file without state, a
#: state file without data or unreadable) are removed past this age (seconds):
#: a creation in progress has them for a moment only.
LEFTOVER_AGE = 3600
#: Seconds a HEAD waits for the lock of an upload being written to: a silent
#: holder lets go within RELEASE_POLL (half a second) of being asked; one
#: still receiving does not, and its upload's offset is answered without it.
SETTLE_WAIT = 1.0


@dataclass
class TusOptions:
    """Protocol settings of one mounted endpoint.

    ``max_size``: largest upload accepted (``Tus-Max-Size``), in bytes.
    ``expiry``: seconds after its last change that an unfinished upload
    expires (``Upload-Expires``); 0 disables the expiration extension.
    ``read_timeout``: seconds a request body may stall before the request is
    ended (its bytes are kept and its lock released).
    ``finished_retention``: seconds after its last byte that housekeeping
    removes a completed upload, for applications whose hooks publish finished
    uploads elsewhere (``TusHooks.publishes_finished_uploads``); None keeps
    them (without such hooks the store is where finished uploads live).
    ``max_unfinished_bytes``: how many bytes the unfinished uploads of one
    owner may hold (see :meth:`Uploads.unfinished_bytes`); None: no cap.
    ``take_over``: a client's request for an upload whose lock a silent
    request body holds asks it to let go (see :mod:`.locker`); False: it
    waits until ``read_timeout`` ends that body.
    """

    max_size: int = 64 * 1024**3
    expiry: float = 0.0
    read_timeout: float = 60.0
    finished_retention: float | None = None
    max_unfinished_bytes: int | None = None
    take_over: bool = True


@dataclass
class Uploads:
    """The store, locker, hooks and options of one endpoint, and the rules
    that span requests."""

    store: Store
    locker: Locker
    hooks: TusHooks
    options: TusOptions
    metrics: TusMetrics
    #: the time (POSIX seconds) that uploads expire by
    clock: Callable[[], float] = time.time
    #: what the owners' unfinished uploads count, known in this process
    tally: UnfinishedTally = field(init=False)

    def __post_init__(self) -> None:
        self.tally = UnfinishedTally(self.store)

    @contextmanager
    def locked(
        self,
        upload_id: str,
        timeout: float | None = None,
        measured: bool = True,
        take_over: bool = False,
    ) -> Iterator[Hold]:
        """The upload's lock, with the wait measured (``measured``: the lock
        metrics count requests; housekeeping and recovery take locks unmeasured).
        ``take_over``: while waiting, ask a holder whose body fell silent to
        let go (see :mod:`.locker`); the requests of clients do."""
        if not measured:
            with self.locker.lock(upload_id, timeout, take_over) as hold:
                yield hold
            return
        started = time.monotonic()
        with ExitStack() as stack:
            self.metrics.lock_waiters.inc()
            try:
                hold = stack.enter_context(self.locker.lock(upload_id, timeout, take_over))
            except errors.TusError:
                self.metrics.lock_timeouts.inc()
                raise
            finally:
                self.metrics.lock_waiters.dec()
                self.metrics.lock_wait.observe(time.monotonic() - started)
            yield hold

    def settle(self, upload_id: str) -> None:
        """Before a HEAD answers: take over the lock of a request whose body
        fell silent, so that the offset read next is what that request kept
        and no byte of it arrives afterwards (tusd's HEAD takes the lock too).
        A holder still receiving or finishing is waited for at most
        :data:`SETTLE_WAIT` seconds; then the offset stored so far is the
        answer (never more than the bytes stored), as without the wait."""
        if not self.options.take_over:
            return
        wait = min(self.locker.timeout, SETTLE_WAIT)
        try:
            with self.locked(upload_id, timeout=wait, measured=False, take_over=True):
                pass
        except errors.TusError:
            pass

    def expired(self, info: UploadInfo, now: float | None = None) -> bool:
        return is_expired(info, self.options.expiry, self.clock() if now is None else now)

    # -- creating --------------------------------------------------------------

    def create(self, info: UploadInfo, body: int | None = None) -> UploadInfo:
        """Create the upload in the store, within its owner's cap
        (:meth:`creating`, ``body`` as there), and run ``post_create``: all
        or nothing.  If the hook fails (a refusal, a full disk under the
        application's database) the upload is removed again, so no upload the
        client was never told about stays behind.  The owner's lock is held
        until the upload exists in the store, not while the hook runs: a
        creation meanwhile counts it, and if the hook refuses it that one
        was held to less room than it had, never to more."""
        with self.creating(info, body):
            try:
                info = self.store.create(info)  # removes what it began if it fails
            except Exception as error:
                if errors.is_out_of_space(error):
                    log.warning(
                        "upload not created: out of storage space (%s)", errors.brief(error)
                    )
                    raise errors.out_of_space(_NOT_CREATED) from None
                raise
        try:
            self.hooks.post_create(info)
        except BaseException as error:
            self.store.terminate(info.id)
            self.locker.discard(info.id)
            if isinstance(error, Exception) and errors.is_out_of_space(error):
                log.warning(
                    "upload %s not created: out of storage space (%s)", info.id, errors.brief(error)
                )
                raise errors.out_of_space(_NOT_CREATED) from None
            raise
        self.metrics.created.inc()
        return info

    # -- size limits ---------------------------------------------------------

    def size_limit(self, info: UploadInfo) -> tuple[int, str]:
        """The largest length ``info`` may reach, and the rule that sets it:
        the application's limit for the upload, or the endpoint's ``max_size``."""
        max_size = self.options.max_size
        if info.size_limit is not None and info.size_limit < max_size:
            rule = info.size_limit_rule or f"this upload's limit is {info.size_limit} bytes"
            return info.size_limit, rule
        return max_size, f"Tus-Max-Size is {max_size} bytes"

    def check_length(self, info: UploadInfo, length: int, what: str) -> None:
        """413 naming the limit if ``length`` is more than ``info`` may hold."""
        limit, rule = self.size_limit(info)
        if length > limit:
            raise errors.over_limit(what, f"{length} bytes is over the limit ({rule})")

    def room(self, info: UploadInfo) -> tuple[int, str]:
        """How many more bytes a deferred-length upload may receive, and the
        limit that says so: its size limit, or its owner's cap."""
        limit, rule = self.size_limit(info)
        room = limit - info.offset
        left = self.owner_room(info.owner, excluding=info.id)
        if left is not None and left - info.offset < room:
            room = max(0, left - info.offset)
            rule = self._cap_rule(info.owner, self.options.max_unfinished_bytes, left)
        return room, f"{rule}; {info.offset} bytes received, {room} more allowed"

    def reserve_room(self, info: UploadInfo, expected: int | None) -> tuple[int, str]:
        """:meth:`room` for a PATCH of the deferred-length upload ``info``
        whose body is ``expected`` bytes (None: unknown), reserved for it
        under its owner's lock: counted in the owner's unfinished bytes until
        :meth:`release_room`, so that PATCHes and creations at once, in any
        process, count each other.  Nothing is reserved for a body larger
        than the room (the PATCH is refused)."""
        if self.options.max_unfinished_bytes is None:
            return self.room(info)
        with self.locked(f"owner:{info.owner or ''}", measured=False):
            room, rule = self.room(info)
            if expected is None or expected <= room:
                self.store.reserve(info, info.offset + (room if expected is None else expected))
        return room, rule

    def release_room(self, info: UploadInfo) -> None:
        """The PATCH that :meth:`reserve_room` reserved for has ended: its
        upload counts what it received again."""
        if self.options.max_unfinished_bytes is not None:
            self.store.reserve(info, 0)

    # -- the cap on an owner's unfinished bytes ------------------------------

    def unfinished_bytes(
        self, owner: str | None, excluding: str | None = None, now: float | None = None
    ) -> int:
        """What the owner's unfinished uploads hold or are to hold: the length
        of each, or, while its length is deferred, its received bytes or the
        length a PATCH in flight may take it to (:meth:`reserve_room`).  Final
        uploads count nothing (their bytes are their partial uploads'), nor
        do expired uploads (they take no more bytes; ``cleanup`` removes
        them) and completed ones (:func:`.tally.counted`).  Lists the owner's
        uploads in progress and reads the state of those whose count this
        process does not know or that may have changed
        (:class:`.tally.UnfinishedTally`: always what a recount would give)."""
        now = self.clock() if now is None else now
        return self.tally.total(owner, self.options.expiry, now, excluding)

    def owner_room(self, owner: str | None, excluding: str | None = None) -> int | None:
        """Bytes the owner's unfinished uploads (but ``excluding``) leave under
        the cap; None without a cap."""
        cap = self.options.max_unfinished_bytes
        if cap is None:
            return None
        return cap - self.unfinished_bytes(owner, excluding)

    @contextmanager
    def creating(self, info: UploadInfo, body: int | None = None) -> Iterator[None]:
        """Check the new upload (and, for a deferred length, the ``body`` of
        the creation request) against its owner's cap and hold the owner's
        lock until it exists in the store (the ``with`` block creates it), so
        that two creations at once, in any process, count each other."""
        cap = self.options.max_unfinished_bytes
        if cap is None:
            yield
            return
        # A final upload's bytes are its partial uploads', counted already.
        adding = 0 if info.is_final else (body or 0) if info.length is None else info.length
        with self.locked(f"owner:{info.owner or ''}", measured=False):
            left = cap - self.unfinished_bytes(info.owner)
            if adding > left:
                raise errors.over_limit(
                    "request body" if info.length is None else "Upload-Length",
                    f"{adding} bytes is over the limit ({self._cap_rule(info.owner, cap, left)})",
                )
            yield

    def check_declared(self, info: UploadInfo, length: int) -> None:
        """A deferred length declared: within the upload's limit and its
        owner's cap (where it then counts instead of the bytes received)."""
        self.check_length(info, length, "Upload-Length")
        left = self.owner_room(info.owner, excluding=info.id)
        if left is not None and length > left:
            rule = self._cap_rule(info.owner, self.options.max_unfinished_bytes, left)
            raise errors.over_limit("Upload-Length", f"{length} bytes is over the limit ({rule})")

    @staticmethod
    def _cap_rule(owner: str | None, cap: int | None, left: int) -> str:
        whose = owner or "anonymous clients"
        return (
            f"max_unfinished_bytes is {cap} bytes per principal, and the unfinished uploads "
            f"of {whose} leave {max(0, left)}"
        )

    # -- finishing -----------------------------------------------------------

    def finish(self, info: UploadInfo) -> dict[str, str]:
        """Run ``post_finish`` for a finished upload (lock held).

        The record that it ran is written after it returns (or refused), so a
        crash in between makes it run again: hooks are idempotent.  For an
        upload already completed (a client re-sending its last PATCH because
        it lost the answer) the hook runs again too, so that the client gets
        the same answer: the same headers, or the same refusal.
        """
        if info.completed:
            with _finishing_out_of_space(info):
                return self.hooks.post_finish(info)
        self.metrics.finished.inc()
        with _finishing_out_of_space(info):
            self.store.make_durable(
                info.id, with_state=info.is_partial or not self.hooks.publishes_finished_uploads
            )
            try:
                headers = self.hooks.post_finish(info)
            except errors.TusError:
                # A refusal is the application's final word on this upload.
                self.store.mark_completed(info)
                raise
        self.store.mark_completed(info)
        if info.is_partial:
            self.complete_finals_of(info)
        return headers

    def recover(self, info: UploadInfo) -> UploadInfo:
        """Finish what a crash left undone, if nobody is busy with the upload:
        ``post_finish`` of a finished upload, the concatenation of a final
        upload whose partial uploads are all finished."""
        if info.completed or not (info.finished or info.is_final):
            return info
        try:
            if info.is_final and not info.finished:
                self.try_complete_final(info.id, timeout=0, measured=False)
            else:
                with self.locked(info.id, timeout=0, measured=False):
                    current = self.store.get(info.id)
                    if current.finished and not current.completed:
                        self.finish(current)
        except errors.TusError as error:
            after = self.store.get(info.id)
            if after.completed:
                # Finished now, with the application's refusal as its last word.
                log.info(
                    "upload %s finished after an interruption: refused (%d): %s",
                    info.id,
                    error.status,
                    error.message,
                )
                return after
            # Busy, or a 507 (logged as a warning where it happened): left for later.
            log.info("upload %s not recovered now: %s", info.id, error.message)
        except Exception as error:
            # A full disk anywhere else on the way: the next HEAD or cleanup retries.
            if not errors.is_out_of_space(error):
                raise
            log.warning(
                "upload %s not recovered now: out of storage space (%s)",
                info.id,
                errors.brief(error),
            )
        return self.store.get(info.id)

    # -- concatenation -------------------------------------------------------

    def partials_of(self, final: UploadInfo) -> list[UploadInfo] | None:
        """The final upload's partial uploads, or None if one is gone."""
        try:
            return [self.store.get(partial_id) for partial_id in final.partials]
        except errors.TusError:
            return None

    def try_complete_final(
        self, final_id: str, timeout: float | None = None, measured: bool = True
    ) -> dict[str, str] | None:
        """Concatenate a final upload if all its partial uploads are finished.

        Returns ``post_finish``'s headers when the final upload is (now)
        finished, None while it waits for partial uploads.
        """
        with self.locked(final_id, timeout, measured):
            final = self.store.get(final_id)
            if final.finished:
                return self.finish(final)
            partials = self.partials_of(final)
            if partials is None or not all(partial.finished for partial in partials):
                return None
            total = sum(partial.offset for partial in partials)
            if final.length is None:
                self.check_length(final, total, "concatenated upload")
            try:
                if final.length is None:
                    self.store.declare_length(final, total)
                self.store.concatenate(final, partials)  # all or nothing
            except Exception as error:
                if not errors.is_out_of_space(error):
                    raise
                log.warning("final upload %s not concatenated: out of storage space", final_id)
                raise errors.out_of_space(
                    "the partial uploads are kept but could not be concatenated; retry later (HEAD)"
                ) from None
            final.offset = total
            return self.finish(final)

    def complete_finals_of(self, partial: UploadInfo) -> None:
        """A partial upload finished: complete final uploads waiting for it
        (concatenation-unfinished)."""
        for final_id in self.store.finals_waiting_for(partial.id):
            try:
                self.try_complete_final(final_id)
            except errors.TusError as error:
                # Not lost: the next HEAD of the final upload retries.
                log.warning("final upload %s not completed now: %s", final_id, error.message)

    # -- housekeeping ----------------------------------------------------------

    def terminate(self, info: UploadInfo) -> None:
        """Remove an upload (lock held)."""
        self.store.terminate(info.id)
        self.locker.discard(info.id)

    def retired(self, info: UploadInfo, now: float) -> bool:
        """A completed upload, published elsewhere, past its retention."""
        retention = self.options.finished_retention
        return (
            retention is not None
            and self.hooks.publishes_finished_uploads
            and info.completed
            and not info.is_partial
            and info.modified + retention <= now
        )

    def sweep(self, now: float | None = None, dry_run: bool = False) -> SweepReport:
        """Remove expired uploads and, past their retention, completed uploads
        that the application published elsewhere; finish what crashes left
        undone (including temporary files a crash left behind).

        Uploads that are busy (locked) are skipped and left for the next run.
        """
        now = self.clock() if now is None else now
        report = SweepReport()
        for upload_id in list(self.store.upload_ids()):
            try:
                info = self.store.get(upload_id)
                if self.expired(info, now):
                    if dry_run:
                        report.expired.append(info)
                        continue
                    with self.locked(upload_id, timeout=0, measured=False):
                        info = self.store.get(upload_id)
                        if not self.expired(info, now):
                            continue
                        self.terminate(info)
                    report.expired.append(info)
                    self.hooks.post_expire(info)
                elif self.retired(info, now):
                    if not dry_run:
                        with self.locked(upload_id, timeout=0, measured=False):
                            info = self.store.get(upload_id)
                            if not self.retired(info, now):
                                continue
                            self.terminate(info)
                    report.retired.append(info)
                elif not dry_run and not info.completed and (info.finished or info.is_final):
                    after = self.recover(info)
                    if after.completed:
                        report.recovered.append(after)
            except errors.TusError as error:
                if error.status == 404:
                    continue  # removed meanwhile, or a leftover (removed below once old)
                report.skipped.append((upload_id, error.message))
            except Exception as error:
                if not errors.is_out_of_space(error):
                    raise
                report.skipped.append((upload_id, f"out of storage space ({errors.brief(error)})"))
        if not dry_run:
            report.temporaries = self.store.remove_stale_temporaries(now - STALE_TEMPORARY_AGE)
            report.leftovers = self.store.remove_leftovers(now - LEFTOVER_AGE)
        return report


@dataclass
class SweepReport:
    expired: list[UploadInfo] = field(default_factory=list)
    #: completed uploads removed after their retention (published elsewhere)
    retired: list[UploadInfo] = field(default_factory=list)
    recovered: list[UploadInfo] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    temporaries: int = 0
    #: ids of unusable uploads' remains a crash left (see ``FileStore.remove_leftovers``)
    leftovers: list[str] = field(default_factory=list)


_NOT_CREATED = "the upload was not created; retry later"


@contextmanager
def _finishing_out_of_space(info: UploadInfo) -> Iterator[None]:
    """A full disk while an upload is finished (published, recorded) is not a
    refusal: the upload stays finished but not completed, so the last PATCH,
    a HEAD or ``cleanup`` runs ``post_finish`` again once there is space."""
    try:
        yield
    except errors.TusError:
        raise
    except Exception as error:
        if not errors.is_out_of_space(error):
            raise
        log.warning(
            "upload %s not finished: out of storage space (%s)", info.id, errors.brief(error)
        )
        raise errors.out_of_space(
            "the upload is complete and kept, but could not be finished; "
            "retry later (HEAD or the last PATCH): it is finished then"
        ) from None
