"""Property: whatever sequence of tus requests arrives, the upload store keeps
its invariants.

A hypothesis state machine drives the real app in process (``create_app``
through :class:`~support.inprocess.InProcessServer`, real stores, database
and report tree on disk, Flask's test client) with random sequences of:

* creation (``POST``): a single upload or a partial upload of the
  concatenation extension, with ``Upload-Length`` or ``Upload-Defer-Length``,
  with or without a body (creation-with-upload);
* ``PATCH`` of the next bytes, declaring a deferred length on the way or not;
* any request body may carry ``Upload-Checksum`` (the whole body) or
  ``Upload-Block-Checksum`` (each 64 KiB block), and may be damaged (one
  byte flipped: the checksum no longer matches) or cut short (the connection
  ends, or is reset, after some bytes: a WSGI input that ends early);
* ``PATCH`` at a wrong offset (409), of more than the upload's length (413),
  declaring another length than the known one or less than the bytes
  received (400), to a final upload (403), to an expired upload (410) or a
  removed one (404);
* termination (``DELETE``);
* a final upload of some of a report's partial uploads (``Upload-Concat:
  final``), before or after they finish (concatenation-unfinished);
* time passing for one upload (its data file's modification time, which is
  where expiry is read from, set back past ``upload_expiry``) and
  housekeeping's sweep (``Uploads.sweep``, what ``cleanup`` runs).

Three rules aim at what random bodies reach too rarely in a bounded run: the
rest of an upload sent whole (uploads finish), the rest of a partial upload
that a final upload waits for (the final upload completes then), and a
block-checksummed rest of more than a block with one byte of one of its
blocks flipped or the connection lost in it (verified blocks before the
damage or the cut).

The requests go to one of two apps on the same data directory, as to two
worker processes of a server, switching now and then (a rule).  Single and
final uploads name their payload's SHA-256 in their metadata, which the
server checks against the digest it computed as the bytes arrived (in
whichever worker): a digest that went wrong through a cut, a damaged block
or a change of worker refuses the finished upload (422).

A model beside it knows what each upload should hold.  A body's bytes are
kept as far as the rules allow: all of a complete body; of a damaged or cut
body, none under ``Upload-Checksum``, the whole blocks before the damage or
the cut under ``Upload-Block-Checksum``, every byte received without a
checksum.

Invariants, checked after every step over every upload the run made (not
only the last one touched):

1. No request is answered 5xx; every 4xx answer (but HEAD's) has a
   plain-text body, and each rule checks that it names the header or rule
   it is about (``Upload-Offset``, ``Upload-Checksum``, ...).
2. An upload that exists answers HEAD 200; the ``Upload-Offset`` it reports
   never goes backwards and is exactly the model's offset; its data file holds
   exactly the model's prefix of what was sent and accepted (so it never
   reports a byte that is not stored, and no byte of a damaged block, or after
   one, is kept).  ``Upload-Length``/``Upload-Defer-Length``,
   ``Upload-Concat`` and ``Upload-Expires`` say what the model says.  A final
   upload reports no offset and holds nothing until it is concatenated.
3. A finished upload (post_finish ran) is byte-identical to the model: its
   data file and, for a single or final upload, the file published in the
   report tree (which stays when the upload is terminated later).
4. An expired upload answers 410 until it is swept; a terminated or swept one
   answers 404 and leaves no file of its own in the store (data, state,
   markers, concatenation links, its owner's hint).
5. Between requests the store holds no ``.pending`` marker and no temporary
   file, and the bytes counted against the owner's cap on unfinished bytes
   are the model's in either worker (no reservation of a request that ended
   is left).

Bounded for CI (``derandomize``, no example database: the same sequences on
every run; about 20 s of one core); one app (``fsync = "never"``) serves
every example, each with its own uploads, terminated at its end.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from werkzeug.test import TestResponse

from dqrxfer.server.services import services
from dqrxfer.server.tus.blueprint import EXTENSIONS
from support.inprocess import InProcessServer, in_process_server
from support.stateful import bounded
from support.tus import (
    OCTETS,
    TUS,
    block_header,
    encode_metadata,
    published,
    report_metadata,
    write_config,
)

#: Block size of ``Upload-Block-Checksum`` (the smallest the server takes).
BLOCK = 64 * 1024
EXPIRY = 3600

SINGLE, PARTIAL, FINAL = "single", "partial", "final"
#: States of an upload: in the store; expired (not swept yet); gone
#: (terminated or swept).
OPEN, EXPIRED, GONE = "open", "expired", "gone"

#: Payload lengths: small ones, and ones of a few blocks (for block checksums
#: to keep some blocks and lose others).
lengths = st.one_of(st.integers(0, 40), st.integers(2 * BLOCK - 3, 3 * BLOCK + 3))
seeds = st.integers(0, 2**16)
_names = itertools.count()
Rule = TypeVar("Rule", bound=Callable[..., None])


def payload_of(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


@dataclass(eq=False)
class Upload:
    """What the model knows of one upload."""

    url: str
    kind: str
    #: every byte the client means to send (a final upload: its partials', in order)
    payload: bytes
    metadata: dict[str, str]
    #: the length the server knows (None: deferred and not declared yet)
    length: int | None
    offset: int = 0
    state: str = OPEN
    #: post_finish ran (a single or final upload is then published)
    completed: bool = False
    partials: list[Upload] = field(default_factory=list)
    #: the highest offset a HEAD reported
    seen: int = 0

    @property
    def id(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def finished(self) -> bool:
        return self.length is not None and self.offset == self.length

    @property
    def expires(self) -> bool:
        """Whether the server gives it an expiry (see ``tus.expiration``)."""
        return self.kind == PARTIAL or not self.finished


def _room(upload: Upload) -> int:
    """How many bytes an upload still takes (0 for a final upload)."""
    return 0 if upload.kind == FINAL else len(upload.payload) - upload.offset


def _with_data(upload: Upload) -> bool:
    """A single or partial upload: one that PATCHes send bytes to."""
    return upload.kind != FINAL


def _unfinished(upload: Upload) -> bool:
    return upload.kind != FINAL and not upload.finished


def _blocks_left(upload: Upload) -> bool:
    return _room(upload) > BLOCK


def _patchable(upload: Upload) -> bool:
    """A single or partial upload in the store, not expired."""
    return upload.kind != FINAL and upload.state == OPEN


def _known_length(upload: Upload) -> bool:
    return _patchable(upload) and upload.length is not None


def some(wanted: Callable[[Upload], bool]) -> Callable[[Rule], Rule]:
    """A rule's precondition: the model has an upload that ``wanted`` accepts."""
    return precondition(lambda self: any(wanted(upload) for upload in self.uploads))


def _wrong_length(upload: Upload) -> int | None:
    """A length a PATCH of the upload may not declare, if there is one."""
    if not _patchable(upload):
        return None
    if upload.length is not None:
        return upload.length + 1
    return upload.offset - 1 if upload.offset else None


@dataclass(frozen=True)
class Body:
    """One request body: ``size`` bytes of the payload from the upload's
    offset, checked (``none``, ``whole``, ``blocks``), and what happens to it
    on the way (``fault`` ``none``, ``damage``, ``end`` or ``reset`` at byte
    ``at``)."""

    size: int
    check: str = "none"
    fault: str = "none"
    at: int = 0

    def kept(self) -> int:
        """How many of its bytes the store keeps."""
        if self.fault == "none":
            return self.size
        if self.check == "whole":
            return 0
        if self.check == "blocks":
            return self.at // BLOCK * BLOCK
        return self.at  # a body without checksum cut short: every byte received


@st.composite
def bodies(draw: st.DrawFn, remaining: int) -> Body:
    """A body of at most ``remaining`` bytes: often all of them (as clients
    send), its fault in any of its blocks."""
    size = draw(st.one_of(st.just(remaining), st.integers(0, remaining)))
    if size == 0:
        return Body(0, draw(st.sampled_from(["none", "whole"])))
    check = draw(st.sampled_from(["none", "whole", "blocks"]))
    faults = ["none", "end", "reset"] + (["damage"] if check != "none" else [])
    fault = draw(st.sampled_from(faults))
    if fault == "none":
        return Body(size, check)
    block = draw(st.integers(0, (size - 1) // BLOCK))
    at = min(size - 1, block * BLOCK + draw(st.integers(0, BLOCK - 1)))
    return Body(size, check, fault, at)


class _CutBody(io.BytesIO):
    """A request body whose connection ends after the bytes it holds: the read
    after them returns nothing (the peer closed) or raises (a reset)."""

    def __init__(self, received: bytes, reset: bool) -> None:
        super().__init__(received)
        self.reset = reset

    def read(self, size: int | None = -1) -> bytes:
        block = super().read(size)
        if not block and size != 0 and self.reset:
            raise ConnectionResetError("connection reset by peer")
        return block


def _sha256(payload: bytes) -> dict[str, str]:
    return {"sha256": hashlib.sha256(payload).hexdigest()}


def _whole_checksum(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()


class StoreRequests(RuleBasedStateMachine):
    #: two apps on one data directory, as two worker processes of a server
    #: (set by the test's fixture); every example drives them
    workers: ClassVar[list[InProcessServer]]

    def __init__(self) -> None:
        super().__init__()
        self.clients: list[FlaskClient] = [w.app.test_client() for w in self.workers]
        self.worker = 0
        self.store_dir = services(self.server.app).settings.uploads_dir
        self.uploads: list[Upload] = []
        #: filename -> the partial uploads meant for the final upload of that name
        self.groups: dict[str, list[Upload]] = {}
        self.joined: set[str] = set()  # groups whose final upload exists

    @property
    def server(self) -> InProcessServer:
        """The worker the next requests go to."""
        return self.workers[self.worker]

    @rule()
    def another_worker(self) -> None:
        """The next requests go to the other worker, as a load balancer may
        send them: another process, its own memory (running digests, locks)."""
        self.worker = 1 - self.worker

    # -- requests ----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        cut: tuple[int, bool] | None = None,
    ) -> TestResponse:
        """Send one request; ``cut`` (bytes, reset): the body's connection ends
        after that many bytes, with a reset or not.  No answer is a 5xx;
        every 4xx but HEAD's has a plain-text body."""
        sent = {**TUS, **(headers or {})}
        extra: dict[str, Any] = {}
        if cut is not None:
            received, reset = cut
            extra["input_stream"] = _CutBody(body[:received], reset)
            extra["environ_overrides"] = {"CONTENT_LENGTH": str(len(body))}
        elif body:
            extra["data"] = body
        client = self.clients[self.worker]
        response = client.open(path, method=method, headers=sent, **extra)
        text = response.get_data(as_text=True)
        assert response.status_code < 500, (method, path, response.status_code, text)
        if 400 <= response.status_code < 500 and method != "HEAD":
            assert response.mimetype == "text/plain" and text.strip(), (method, path, text)
        return response

    def send(
        self, method: str, upload: Upload, path: str, headers: dict[str, str], body: Body
    ) -> tuple[TestResponse, int]:
        """Send ``body`` (bytes of ``upload``'s payload from its offset) to
        ``path``; returns the answer and how many bytes the model expects
        kept, checking that an answer to a fault names its rule."""
        start = upload.offset
        data = upload.payload[start : start + body.size]
        sent = dict(headers)
        if method == "PATCH" or body.size or body.check != "none":
            sent["Content-Type"] = OCTETS
        if body.check == "whole":
            sent["Upload-Checksum"] = _whole_checksum(data)
        elif body.check == "blocks":
            sent["Upload-Block-Checksum"] = block_header(data, BLOCK)
        cut = None
        if body.fault == "damage":
            damaged = bytearray(data)
            damaged[body.at] ^= 0x5A
            data = bytes(damaged)
        elif body.fault in ("end", "reset"):
            cut = (body.at, body.fault == "reset")
        response = self.request(method, path, sent, data, cut)
        kept = body.kept()
        share = "none" if kept == 0 else "all" if kept == body.size else "some"
        event(f"{method} body, {body.check} checksum, fault {body.fault}: {share} kept")
        text = response.get_data(as_text=True)
        if body.fault == "damage":
            assert response.status_code == 460, (response.status_code, text)
            named = "Upload-Checksum" if body.check == "whole" else "Upload-Block-Checksum"
            assert text.startswith(f"{named}:"), text
            if body.check == "blocks":
                assert f"block {body.at // BLOCK} does not match" in text, text
                assert response.headers["Upload-Offset"] == str(start + kept)
        elif body.fault != "none":
            assert response.status_code == 400, (response.status_code, text)
            assert text.startswith("request body ended after") and "Upload-Offset" in text, text
        return response, kept

    # -- creation ----------------------------------------------------------

    def _create(
        self,
        kind: str,
        payload: bytes,
        metadata: dict[str, str],
        deferred: bool,
        body: Body | None,
    ) -> Upload:
        headers = {"Upload-Metadata": encode_metadata(metadata)}
        if deferred:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(len(payload))
        if kind == PARTIAL:
            headers["Upload-Concat"] = "partial"
        model = Upload("", kind, payload, metadata, None if deferred else len(payload))
        if body is None:
            response = self.request("POST", "/files/", headers)
            kept = 0
            assert response.status_code == 201, response.get_data(as_text=True)
        else:
            response, kept = self.send("POST", model, "/files/", headers, body)
            if body.fault == "none":
                assert response.status_code == 201, response.get_data(as_text=True)
        model.url = response.headers["Location"]
        model.offset = kept
        if response.status_code == 201:
            assert response.headers["Upload-Offset"] == str(kept)
        self.uploads.append(model)
        self._settle(model)
        return model

    def _open_groups(self) -> list[str]:
        """Report files whose final upload does not exist yet, in the order
        of their first partial upload (not of their names: a name's number
        depends on the examples before)."""
        return [filename for filename in self.groups if filename not in self.joined]

    @rule(
        data=st.data(),
        kind=st.sampled_from([SINGLE, PARTIAL]),
        length=lengths,
        seed=seeds,
        deferred=st.booleans(),
        with_body=st.booleans(),
    )
    def create(
        self,
        data: st.DataObject,
        kind: str,
        length: int,
        seed: int,
        deferred: bool,
        with_body: bool,
    ) -> None:
        """A single upload, or a partial upload for a new or an existing
        report file (one whose final upload does not exist yet)."""
        if kind == PARTIAL:
            filename = data.draw(st.sampled_from([f"p{next(_names)}.bin", *self._open_groups()]))
        else:
            filename = f"s{next(_names)}.bin"
        payload = payload_of(seed, length)
        # A single upload names its payload's SHA-256 (checked when it finishes,
        # against the digest computed while its bytes arrived); a partial
        # upload cannot, its final upload does.
        metadata = report_metadata(filename, **({} if kind == PARTIAL else _sha256(payload)))
        body = data.draw(bodies(length)) if with_body else None
        upload = self._create(kind, payload, metadata, deferred, body)
        if kind == PARTIAL:
            self.groups.setdefault(filename, []).append(upload)

    @precondition(lambda self: self._open_groups())
    @rule(data=st.data())
    def create_final(self, data: st.DataObject) -> None:
        """A final upload of some of a report file's partial uploads (any
        order, repeats allowed), finished or not, expired, or gone."""
        filename = data.draw(st.sampled_from(self._open_groups()))
        partials = data.draw(
            st.lists(st.sampled_from(self.groups[filename]), min_size=1, max_size=3)
        )
        payload = b"".join(partial.payload for partial in partials)
        metadata = report_metadata(filename, **_sha256(payload))
        headers = {
            "Upload-Concat": "final;" + " ".join(partial.url for partial in partials),
            "Upload-Metadata": encode_metadata(metadata),
        }
        response = self.request("POST", "/files/", headers)
        text = response.get_data(as_text=True)
        if any(partial.state != OPEN for partial in partials):
            assert response.status_code == 400, (response.status_code, text)
            assert text.startswith("Upload-Concat:"), text
            return
        assert response.status_code == 201, text
        lengths = [partial.length for partial in partials]
        final = Upload(
            response.headers["Location"],
            FINAL,
            payload,
            metadata,
            None if None in lengths else sum(length or 0 for length in lengths),
            partials=partials,
        )
        self.uploads.append(final)
        self.joined.add(filename)
        self._settle(final)
        if final.completed:
            assert response.headers["Upload-Offset"] == str(final.length)
        else:
            assert "Upload-Offset" not in response.headers

    def _settle(self, changed: Upload) -> None:
        """What finishing ``changed`` completes: itself, and final uploads
        whose partial uploads are now all finished and in the store."""
        if changed.kind != FINAL and changed.finished and changed.state == OPEN:
            changed.completed = True
        for final in self.uploads:
            if final.kind != FINAL or final.completed or final.state != OPEN:
                continue
            partials = final.partials
            if all(partial.state != GONE and partial.completed for partial in partials):
                final.completed = True
                final.length = final.offset = len(final.payload)
                event("final upload completed" + (" when created" if final is changed else ""))

    # -- PATCH -------------------------------------------------------------

    def _pick(self, data: st.DataObject, wanted: Callable[[Upload], bool]) -> Upload:
        return data.draw(st.sampled_from([u for u in self.uploads if wanted(u)]))

    @some(_with_data)
    @rule(data=st.data(), declare=st.booleans())
    def patch(self, data: st.DataObject, declare: bool) -> None:
        """The next bytes (maybe none, maybe damaged or cut), declaring a
        deferred length on the way or not."""
        upload = self._pick(data, _with_data)
        self._patch(upload, data.draw(bodies(len(upload.payload) - upload.offset)), declare)

    @some(_unfinished)
    @rule(data=st.data(), check=st.sampled_from(["none", "whole", "blocks"]))
    def send_the_rest(self, data: st.DataObject, check: str) -> None:
        """Every byte left, the length declared."""
        upload = self._pick(data, _unfinished)
        remaining = len(upload.payload) - upload.offset
        self._patch(upload, Body(remaining, check if remaining else "none"), declare=True)

    @precondition(lambda self: self._awaited())
    @rule(data=st.data(), check=st.sampled_from(["none", "whole", "blocks"]))
    def finish_an_awaited_partial(self, data: st.DataObject, check: str) -> None:
        """The rest of a partial upload that a final upload waits for."""
        upload = data.draw(st.sampled_from(self._awaited()))
        remaining = len(upload.payload) - upload.offset
        self._patch(upload, Body(remaining, check if remaining else "none"), declare=True)

    def _awaited(self) -> list[Upload]:
        """Unfinished partial uploads that a waiting final upload names."""
        waiting = [u for u in self.uploads if u.kind == FINAL and u.state == OPEN]
        named = {id(p): p for final in waiting if not final.completed for p in final.partials}
        return [p for p in named.values() if _patchable(p) and not p.finished]

    @some(_blocks_left)
    @rule(
        data=st.data(),
        fault=st.sampled_from(["damage", "end", "reset"]),
        block=st.integers(0, 3),
        at=st.integers(0, BLOCK - 1),
    )
    def break_a_block(self, data: st.DataObject, fault: str, block: int, at: int) -> None:
        """The rest under block checksums, one byte of one block flipped or
        the connection lost in it."""
        upload = self._pick(data, _blocks_left)
        size = len(upload.payload) - upload.offset
        self._patch(upload, Body(size, "blocks", fault, min(size - 1, block * BLOCK + at)))

    def _patch(self, upload: Upload, body: Body, declare: bool = False) -> None:
        headers = {"Upload-Offset": str(upload.offset)}
        declaring = declare and upload.length is None
        if declaring:
            headers["Upload-Length"] = str(len(upload.payload))
        if upload.state != OPEN:
            response = self.request("PATCH", upload.path, {**headers, "Content-Type": OCTETS})
            self._check_absent(upload, response)
            return
        response, kept = self.send("PATCH", upload, upload.path, headers, body)
        if declaring:
            upload.length = len(upload.payload)
        upload.offset += kept
        if body.fault == "none":
            assert response.status_code == 204, response.get_data(as_text=True)
            assert response.headers["Upload-Offset"] == str(upload.offset)
        self._settle(upload)

    @staticmethod
    def _check_absent(upload: Upload, response: TestResponse, head: bool = False) -> None:
        """410 for an expired upload, 404 for one that is gone; the reason
        named (HEAD answers have no body)."""
        text = response.get_data(as_text=True)
        status, reason = (410, "expired") if upload.state == EXPIRED else (404, "not found")
        assert response.status_code == status, (response.status_code, text)
        assert head or reason in text, text

    @some(_patchable)
    @rule(data=st.data(), size=st.integers(1, 10))
    def patch_at_a_wrong_offset(self, data: st.DataObject, size: int) -> None:
        upload = self._pick(data, _patchable)
        wrong = data.draw(
            st.integers(0, upload.offset + BLOCK).filter(lambda o: o != upload.offset)
        )
        headers = {"Upload-Offset": str(wrong), "Content-Type": OCTETS}
        response = self.request("PATCH", upload.path, headers, b"x" * size)
        text = response.get_data(as_text=True)
        assert response.status_code == 409, (response.status_code, text)
        assert text == f"Upload-Offset: {wrong} does not match the current offset {upload.offset}\n"

    @some(_known_length)
    @rule(data=st.data(), excess=st.integers(1, 3))
    def patch_more_than_the_length(self, data: st.DataObject, excess: int) -> None:
        upload = self._pick(data, _known_length)
        assert upload.length is not None
        size = upload.length - upload.offset + excess
        headers = {"Upload-Offset": str(upload.offset), "Content-Type": OCTETS}
        response = self.request("PATCH", upload.path, headers, b"y" * size)
        text = response.get_data(as_text=True)
        assert response.status_code == 413, (response.status_code, text)
        assert text.startswith("request body exceeds the limit"), text

    @some(lambda upload: _wrong_length(upload) is not None)
    @rule(data=st.data())
    def declare_a_wrong_length(self, data: st.DataObject) -> None:
        """Another length than the one known, or less than the bytes received."""
        upload = self._pick(data, lambda upload: _wrong_length(upload) is not None)
        wrong = _wrong_length(upload)
        headers = {
            "Upload-Offset": str(upload.offset),
            "Upload-Length": str(wrong),
            "Content-Type": OCTETS,
        }
        response = self.request("PATCH", upload.path, headers)
        text = response.get_data(as_text=True)
        assert response.status_code == 400, (response.status_code, text)
        rule = f"is already {upload.length}" if upload.length is not None else "is less than"
        assert text.startswith("Upload-Length: ") and rule in text, text

    @some(lambda upload: upload.kind == FINAL)
    @rule(data=st.data())
    def patch_a_final_upload(self, data: st.DataObject) -> None:
        upload = self._pick(data, lambda upload: upload.kind == FINAL)
        headers = {"Upload-Offset": "0", "Content-Type": OCTETS}
        response = self.request("PATCH", upload.path, headers, b"z")
        if upload.state != OPEN:
            self._check_absent(upload, response)
            return
        text = response.get_data(as_text=True)
        assert response.status_code == 403, (response.status_code, text)
        assert "final upload" in text

    # -- termination, expiry, cleanup --------------------------------------

    @some(lambda upload: True)
    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        upload = self._pick(data, lambda upload: True)
        response = self.request("DELETE", upload.path)
        if upload.state == GONE:
            self._check_absent(upload, response)
            return
        assert response.status_code == 204, response.get_data(as_text=True)
        upload.state = GONE

    @some(lambda upload: _patchable(upload) and upload.expires)
    @rule(data=st.data())
    def time_passes(self, data: st.DataObject) -> None:
        """One upload's last change moves back past the expiry."""
        upload = self._pick(data, lambda upload: _patchable(upload) and upload.expires)
        then = time.time() - EXPIRY - 60
        os.utime(self.store_dir / upload.id, (then, then))
        upload.state = EXPIRED
        # Setting a file's time back is not something a server meets: what
        # each worker knows of its owner's counts holds while an upload's
        # last change only moves later (see tus.tally, tested with a clock
        # of its own in test_tus_tally_stateful.py).
        for worker in self.workers:
            services(worker.app).uploads.tally.forget()

    @some(lambda upload: upload.state == EXPIRED)
    @rule()
    def sweep(self) -> None:
        report = services(self.server.app).uploads.sweep()
        swept = {info.id for info in report.expired}
        for upload in self.uploads:
            if upload.state == EXPIRED:
                event("expired upload swept")
                assert upload.id in swept
                upload.state = GONE
            else:
                assert upload.id not in swept

    def teardown(self) -> None:
        """Terminate what this example left, so that the next ones (on the
        same app) do not count it among the owner's unfinished bytes."""
        for upload in self.uploads:
            if upload.state != GONE:
                self.request("DELETE", upload.path)

    # -- invariants ----------------------------------------------------------

    @invariant()
    def every_upload_is_what_the_model_says(self) -> None:
        for upload in self.uploads:
            self._check(upload)
        strays = [
            path.name
            for path in self.store_dir.iterdir()
            if path.name.endswith((".pending", ".tmp"))
        ]
        assert strays == []

    @invariant()
    def unfinished_bytes_are_what_the_model_says(self) -> None:
        """What the cap on an owner's unfinished bytes counts: the length of
        each unfinished single or partial upload (received bytes while it is
        deferred), no reservation left by a request that ended.  Earlier
        examples terminated theirs: all are this example's."""
        expected = sum(
            upload.offset if upload.length is None else upload.length
            for upload in self.uploads
            if _patchable(upload) and not upload.completed
        )
        for worker in self.workers:  # each with what its process knows
            assert services(worker.app).uploads.unfinished_bytes(None) == expected

    def _check(self, upload: Upload) -> None:
        response = self.request("HEAD", upload.path)
        stored = self.store_dir / upload.id
        if upload.completed and upload.kind != PARTIAL:
            assert published(self.server, upload.metadata).read_bytes() == upload.payload
        if upload.state != OPEN:
            self._check_absent(upload, response, head=True)
            if upload.state == EXPIRED:
                assert stored.read_bytes() == upload.payload[: upload.offset]
            else:
                assert self._files_of(upload) == []
            return
        assert response.status_code == 200, response.status_code
        headers = response.headers
        if upload.kind == FINAL and not upload.completed:
            assert "Upload-Offset" not in headers
            assert stored.stat().st_size == 0
        else:
            offset = int(headers["Upload-Offset"])
            assert offset >= upload.seen, f"the offset went back from {upload.seen} to {offset}"
            upload.seen = offset
            assert offset == upload.offset
            assert stored.read_bytes() == upload.payload[: upload.offset]
        length = self._reported_length(upload)
        if length is None:
            assert headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in headers
        else:
            assert headers["Upload-Length"] == str(length)
        if upload.kind == PARTIAL:
            assert headers["Upload-Concat"] == "partial"
        elif upload.kind == FINAL:
            assert headers["Upload-Concat"] == "final;" + " ".join(p.url for p in upload.partials)
        else:
            assert "Upload-Concat" not in headers
        assert ("Upload-Expires" in headers) == upload.expires

    @staticmethod
    def _reported_length(upload: Upload) -> int | None:
        if upload.length is not None or upload.kind != FINAL:
            return upload.length
        lengths = [p.length for p in upload.partials if p.state != GONE]
        if len(lengths) < len(upload.partials) or None in lengths:
            return None
        return sum(length or 0 for length in lengths)

    def _files_of(self, upload: Upload) -> list[str]:
        """What the store holds of ``upload`` (its owner's hint included)."""
        patterns = [f"{upload.id}*", f".{upload.id}*", f"*/{upload.id}", f"*/*/{upload.id}"]
        named = {path for pattern in patterns for path in self.store_dir.glob(pattern)}
        return sorted(str(path.relative_to(self.store_dir)) for path in named)


StoreRequests.TestCase.settings = bounded(150, 25, HealthCheck.data_too_large)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[InProcessServer]]:
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(
        tmp_path / "config.toml", upload_expiry=EXPIRY, fsync="never", lock_timeout=1
    )
    with in_process_server(data, config) as first, in_process_server(data, config) as second:
        StoreRequests.workers = [first, second]
        yield StoreRequests.workers


def test_request_sequences_keep_the_store_consistent(workers: list[InProcessServer]) -> None:
    # The rules use every extension there is: the server must offer them all here.
    options = workers[0].app.test_client().options("/files/")
    assert set(options.headers["Tus-Extension"].split(",")) == set(EXTENSIONS)
    StoreRequests.TestCase("runTest").runTest()
