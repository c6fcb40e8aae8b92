"""The tus 1.0.0 protocol as a Flask blueprint: one function per HTTP verb.

Every request passes through :func:`_check_version` (412 unless OPTIONS) and
every :class:`~.errors.TusError` becomes a plain-text response with its status
in :func:`_error_response`.  Storage, locking and the application's rules are
reached only through :class:`~.lifecycle.Uploads` (store, locker, hooks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from . import errors
from .blocks import EXTENSION as BLOCK_CHECKSUM
from .blocks import HEADER as BLOCK_CHECKSUM_HEADER
from .blocks import BlockChecksums, BlockMismatch, parse_block_checksums
from .body import BodyGone, BodyReleased, body_reader
from .checksum import ADVERTISED as CHECKSUM_ALGORITHMS
from .checksum import ChunkChecksum, parse_checksum
from .cors import CorsHeaders, NoCors
from .datastore import CONCAT_FINAL, CONCAT_PARTIAL, Store, UploadInfo, new_upload_id, valid_id
from .expiration import expires_at, http_date
from .hooks import TusHooks
from .lifecycle import TusOptions, Uploads
from .locker import Hold, Locker
from .metadata import encode_metadata, parse_metadata
from .metrics import tus_metrics

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
    "concatenation-unfinished",
    BLOCK_CHECKSUM,
)
UPLOAD_METHODS = "OPTIONS, HEAD, PATCH, DELETE, POST"

log = logging.getLogger("dqrxfer.tus")


_EXTENSION = "tus"


@dataclass(frozen=True)
class _Endpoint:
    """What a mounted blueprint serves with (kept in ``app.extensions``)."""

    uploads: Uploads
    cors: CorsHeaders
    identify: Callable[[], str | None]


def _endpoint(app: Flask | None = None) -> _Endpoint:
    found = (app or current_app).extensions[_EXTENSION]
    assert isinstance(found, _Endpoint)
    return found


def uploads_of(app: Flask | None = None) -> Uploads:
    """The :class:`~.lifecycle.Uploads` of the blueprint ``app`` (default:
    the current app) registered."""
    return _endpoint(app).uploads


def _uploads() -> Uploads:
    return _endpoint().uploads


def _cors() -> CorsHeaders:
    return _endpoint().cors


def _nobody() -> None:
    return None


def _caller() -> str | None:
    return _endpoint().identify()


def _owned(upload_id: str) -> UploadInfo:
    """The upload, if the caller owns it; 404 otherwise (its existence is not revealed)."""
    info = _uploads().store.get(upload_id)
    if info.owner != _caller():
        raise errors.not_found()
    return info


def _base_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}


def _response(status: int, headers: dict[str, str] | None = None, body: str = "") -> Response:
    merged = _base_headers()
    merged.update(headers or {})
    return Response(body, status=status, headers=merged, mimetype="text/plain")


def _error_response(error: errors.TusError) -> Response:
    return _response(error.status, error.headers, error.message + "\n")


def _out_of_space_response(error: Exception) -> Response | HTTPException:
    """A full disk wherever no handler said more (a declared length, a
    termination's record): 507, a warning instead of a traceback.  Anything
    else goes on to Flask's 500."""
    if isinstance(error, HTTPException):
        return error
    if not errors.is_out_of_space(error):
        raise error
    log.warning("%s %s: out of storage space (%s)", _method(), request.path, errors.brief(error))
    return _error_response(errors.out_of_space("the request was not completed; retry later"))


def _method() -> str:
    """The request's method, with ``X-HTTP-Method-Override`` honoured on POST
    (for clients and proxies that cannot send PATCH or DELETE)."""
    override = request.headers.get("X-HTTP-Method-Override")
    if request.method == "POST" and override:
        return override.strip().upper()
    return request.method


def _parse_non_negative(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise errors.bad_header(name, "must be a non-negative integer")
    return int(value)


def _check_version() -> None:
    if request.method == "OPTIONS":
        return
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise errors.unsupported_version(TUS_VERSION)


def _finalize_response(response: Response) -> Response:
    _cors().apply(request, response)
    _uploads().metrics.count_request(_method(), response.status_code)
    return response


def _upload_url(upload_id: str) -> str:
    return url_for("tus.upload", upload_id=upload_id, _external=True)


def make_blueprint(
    store: Store,
    locker: Locker,
    hooks: TusHooks | None = None,
    options: TusOptions | None = None,
    url_prefix: str = "/files",
    identify: Callable[[], str | None] | None = None,
    cors: CorsHeaders | None = None,
) -> Blueprint:
    """Build the blueprint over ``store``, ``locker`` and ``hooks`` (see
    :func:`blueprint_for`)."""
    uploads = Uploads(store, locker, hooks or TusHooks(), options or TusOptions(), tus_metrics())
    return blueprint_for(uploads, url_prefix, identify, cors)


def blueprint_for(
    uploads: Uploads,
    url_prefix: str = "/files",
    identify: Callable[[], str | None] | None = None,
    cors: CorsHeaders | None = None,
) -> Blueprint:
    """The blueprint of the endpoint ``uploads`` describes; the app
    registering it finds them with :func:`uploads_of`.

    ``identify`` names the caller of the current request (the application
    authenticates).  An upload belongs to whoever created it: it is stored as
    ``info.owner``, and anyone else is told the upload does not exist (404);
    a final upload may only be made of its creator's partial uploads.
    ``cors`` answers browsers on other origins (see :mod:`.cors` for what
    it should allow).
    """
    blueprint = Blueprint("tus", __name__, url_prefix=url_prefix)
    answer = cors or NoCors()

    @blueprint.record_once
    def _install(state: BlueprintSetupState) -> None:
        state.app.extensions[_EXTENSION] = _Endpoint(uploads, answer, identify or _nobody)

    blueprint.before_request(_check_version)
    blueprint.after_request(_finalize_response)
    blueprint.register_error_handler(errors.TusError, _error_response)
    blueprint.register_error_handler(Exception, _out_of_space_response)

    blueprint.add_url_rule("/", "collection", _collection, methods=["OPTIONS", "POST"])
    blueprint.add_url_rule("", "collection_noslash", _collection, methods=["OPTIONS", "POST"])
    blueprint.add_url_rule(
        "/<upload_id>",
        "upload",
        _upload,
        methods=["OPTIONS", "HEAD", "PATCH", "DELETE", "POST"],
    )
    return blueprint


def _collection() -> Response:
    method = _method()
    if method == "OPTIONS":
        return _options()
    if method == "POST":
        return _post()
    raise errors.method_not_allowed(method, "OPTIONS, POST")


def _upload(upload_id: str) -> Response:
    method = _method()
    if method == "OPTIONS":
        return _options()
    if not valid_id(upload_id):
        raise errors.not_found()
    if method == "HEAD":
        return _head(upload_id)
    if method == "PATCH":
        return _patch(upload_id)
    if method == "DELETE":
        return _delete(upload_id)
    raise errors.method_not_allowed(method, UPLOAD_METHODS)


# -- OPTIONS -------------------------------------------------------------------


def _options() -> Response:
    options = _uploads().options
    extensions = [e for e in EXTENSIONS if e != "expiration" or options.expiry > 0]
    return _response(
        204,
        {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(extensions),
            "Tus-Max-Size": str(options.max_size),
            "Tus-Checksum-Algorithm": CHECKSUM_ALGORITHMS,
        },
    )


# -- POST (creation) -------------------------------------------------------------


def _parse_concat(header: str | None) -> tuple[str | None, list[str]]:
    """``Upload-Concat``: ``partial``, or ``final;<url> <url> ...``."""
    if header is None:
        return None, []
    value = header.strip()
    if value == CONCAT_PARTIAL:
        return CONCAT_PARTIAL, []
    if not value.startswith(CONCAT_FINAL + ";"):
        raise errors.bad_header("Upload-Concat", "must be 'partial' or 'final;<upload URLs>'")
    urls = value[len(CONCAT_FINAL) + 1 :].split()
    if not urls:
        raise errors.bad_header("Upload-Concat", "a final upload names at least one partial upload")
    prefix = (request.blueprint and current_app.blueprints[request.blueprint].url_prefix) or ""
    ids = []
    for url in urls:
        path = urlsplit(url).path
        head, _, upload_id = path.rstrip("/").rpartition("/")
        if not head.endswith(prefix) or not valid_id(upload_id):
            raise errors.bad_header("Upload-Concat", f"{url[:100]!r} is not an upload URL here")
        ids.append(upload_id)
    return CONCAT_FINAL, ids


def _creation_length(concat: str | None) -> int | None:
    length_header = request.headers.get("Upload-Length")
    defer = request.headers.get("Upload-Defer-Length")
    if concat == CONCAT_FINAL:
        if length_header is not None or defer is not None:
            raise errors.bad_header(
                "Upload-Length", "a final upload's length is the sum of its partial uploads"
            )
        return None
    if length_header is not None and defer is not None:
        raise errors.bad_header("Upload-Defer-Length", "may not be sent with Upload-Length")
    if defer is not None:
        if defer.strip() != "1":
            raise errors.bad_header("Upload-Defer-Length", "must be 1")
        return None
    if length_header is None:
        raise errors.bad_header("Upload-Length", "is required (or Upload-Defer-Length: 1)")
    return _parse_non_negative("Upload-Length", length_header)


def _final_partials(uploads: Uploads, ids: list[str]) -> tuple[list[str], int | None]:
    """Check the partial uploads a final upload names; its length if known."""
    total: int | None = 0
    for upload_id in ids:
        try:
            partial = _owned(upload_id)
        except errors.TusError:
            raise errors.bad_header(
                "Upload-Concat", f"no partial upload {_upload_url(upload_id)}"
            ) from None
        if not partial.is_partial:
            raise errors.bad_header(
                "Upload-Concat", f"{_upload_url(upload_id)} is not a partial upload"
            )
        if uploads.expired(partial):
            raise errors.bad_header("Upload-Concat", f"{_upload_url(upload_id)} has expired")
        total = None if total is None or partial.length is None else total + partial.length
    return ids, total


def _check_creation_size(uploads: Uploads, info: UploadInfo, body: int | None) -> None:
    """The new upload's length (or, deferred, its first body) within the limit
    the application set for it in ``pre_create``: refused before it exists."""
    if info.length is not None:
        uploads.check_length(
            info, info.length, "Upload-Concat" if info.is_final else "Upload-Length"
        )
    elif body is not None:
        uploads.check_length(info, body, "request body")


def _has_body() -> bool:
    if request.content_length is not None:
        return request.content_length > 0
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _is_offset_stream(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip() == OFFSET_CONTENT_TYPE


def _post() -> Response:
    uploads = _uploads()
    options = uploads.options
    concat, partial_ids = _parse_concat(request.headers.get("Upload-Concat"))
    length = _creation_length(concat)
    if concat == CONCAT_FINAL:
        partial_ids, length = _final_partials(uploads, partial_ids)
    if length is not None and length > options.max_size:
        raise errors.too_large("Upload-Length", options.max_size)
    metadata = parse_metadata(request.headers.get("Upload-Metadata"))

    with_body = _has_body()
    content_type = request.headers.get("Content-Type")
    checksum = None
    if with_body:
        if not _is_offset_stream(content_type):
            raise errors.wrong_content_type(content_type)
        if concat == CONCAT_FINAL:
            raise errors.bad_header("Upload-Concat", "a final upload carries no data")
        limit = options.max_size if length is None else length
        if request.content_length is not None and request.content_length > limit:
            raise errors.too_large("request body", limit)
        checksum = _body_checks()

    info = UploadInfo(
        id=new_upload_id(),
        length=length,
        metadata=metadata,
        concat=concat,
        partials=partial_ids,
        owner=_caller(),
    )
    uploads.hooks.pre_create(info)
    body = request.content_length if with_body else None
    _check_creation_size(uploads, info, body)
    info = uploads.create(info, body)
    location = _upload_url(info.id)

    headers: dict[str, str] = {"Location": location}
    try:
        if concat == CONCAT_FINAL:
            for partial_id in partial_ids:
                uploads.store.link_final(partial_id, info.id)
            finished = uploads.try_complete_final(info.id)
            if finished is not None:
                headers.update(finished)
                info.offset = info.length or 0
                headers["Upload-Offset"] = str(info.offset)
        else:
            if with_body or info.finished:
                with uploads.locked(info.id) as hold:
                    if with_body:
                        headers.update(_receive(uploads, info, checksum, hold))
                    else:
                        headers.update(uploads.finish(info))
            headers["Upload-Offset"] = str(info.offset)
    except errors.TusError as error:
        # The upload exists: tell the client where, so it can resume.
        error.headers.setdefault("Location", location)
        raise
    _add_expires(uploads, info, headers)
    return _response(201, headers)


# -- HEAD --------------------------------------------------------------------------


def _head(upload_id: str) -> Response:
    uploads = _uploads()
    info = _owned(upload_id)
    if uploads.expired(info):
        raise errors.gone()
    if not info.completed and not info.is_final:
        uploads.settle(upload_id)  # a silent writer's bytes, all of them
        info = uploads.store.get(upload_id)
    info = uploads.recover(info)
    headers: dict[str, str] = {}
    if not info.is_final or info.finished:
        # A final upload has no meaningful offset until it is concatenated.
        headers["Upload-Offset"] = str(info.offset)
    length = info.length
    if length is None and info.is_final:
        partials = uploads.partials_of(info) or []
        if partials and all(partial.length is not None for partial in partials):
            length = sum(partial.length or 0 for partial in partials)
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    if info.metadata:
        headers["Upload-Metadata"] = encode_metadata(info.metadata)
    if info.is_partial:
        headers["Upload-Concat"] = CONCAT_PARTIAL
    elif info.is_final:
        urls = " ".join(_upload_url(partial_id) for partial_id in info.partials)
        headers["Upload-Concat"] = f"{CONCAT_FINAL};{urls}"
    _add_expires(uploads, info, headers)
    return _response(200, headers)


def _add_expires(uploads: Uploads, info: UploadInfo, headers: dict[str, str]) -> None:
    moment = expires_at(info, uploads.options.expiry)
    if moment is not None:
        headers["Upload-Expires"] = http_date(moment)


# -- PATCH -------------------------------------------------------------------------


def _patch(upload_id: str) -> Response:
    uploads = _uploads()
    content_type = request.headers.get("Content-Type")
    if not _is_offset_stream(content_type):
        raise errors.wrong_content_type(content_type)
    offset = _parse_non_negative("Upload-Offset", request.headers.get("Upload-Offset"))
    if offset is None:
        raise errors.bad_header("Upload-Offset", "is required")
    declared = _parse_non_negative("Upload-Length", request.headers.get("Upload-Length"))
    checksum = _body_checks()
    _owned(upload_id)  # before the lock: a busy upload of someone else's is still a 404

    with uploads.locked(upload_id, take_over=uploads.options.take_over) as hold:
        info = uploads.store.get(upload_id)
        if uploads.expired(info):
            raise errors.gone()
        if info.is_final:
            raise errors.final_upload_patch()
        if offset != info.offset:
            raise errors.offset_mismatch(info.offset, offset)
        if declared is not None:
            _declare_length(uploads, info, declared)
        headers = _receive(uploads, info, checksum, hold)
    headers["Upload-Offset"] = str(info.offset)
    _add_expires(uploads, info, headers)
    return _response(204, headers)


def _declare_length(uploads: Uploads, info: UploadInfo, length: int) -> None:
    if info.length is not None:
        if length != info.length:
            raise errors.bad_header("Upload-Length", f"is already {info.length}")
        return
    if length < info.offset:
        raise errors.bad_header(
            "Upload-Length", f"{length} is less than the {info.offset} bytes received"
        )
    uploads.check_declared(info, length)
    uploads.store.declare_length(info, length)


def _body_checks() -> ChunkChecksum | BlockChecksums | None:
    """What checks the body: ``Upload-Checksum`` (the whole body) or
    ``Upload-Block-Checksum`` (each block of it, see :mod:`.blocks`), not both."""
    whole = request.headers.get("Upload-Checksum")
    blocks = request.headers.get(BLOCK_CHECKSUM_HEADER)
    if whole is not None and blocks is not None:
        raise errors.bad_header(
            BLOCK_CHECKSUM_HEADER, "may not be sent with Upload-Checksum (send one of them)"
        )
    if blocks is not None:
        return parse_block_checksums(blocks, request.content_length)
    return parse_checksum(whole)


def _receive(
    uploads: Uploads,
    info: UploadInfo,
    checksum: ChunkChecksum | BlockChecksums | None,
    hold: Hold,
) -> dict[str, str]:
    """Stream the request body into the upload (lock ``hold`` held); update
    ``info``.  A body that falls silent lets go of the lock when another
    request asks for it (:class:`~.body.BodyReleased`), what it stored kept.

    Returns the headers of ``post_finish`` if the upload is now finished.
    """
    rule = None  # what limits a deferred-length upload (its length limits the others)
    expected = request.content_length
    if info.length is None:
        limit, rule = uploads.reserve_room(info, expected)  # released below
    else:
        limit = info.length - info.offset
    if expected is not None and expected > limit:
        raise _body_too_large(limit, rule)
    start = info.offset
    uploads.metrics.open.inc()
    try:
        options = uploads.options
        released = hold.release_requested if options.take_over else None
        with body_reader(request.environ, expected, options.read_timeout, released) as read:
            verify = None
            if isinstance(checksum, BlockChecksums):
                assert expected is not None  # parse_block_checksums requires it
                read = checksum.wrap(read, expected)
            elif checksum is not None:
                read = checksum.wrap(read)
                verify = checksum.verify
            written = uploads.store.write(info.id, start, read, limit, verify)
    except errors.TusError as error:
        if error.status == 413 and rule is not None:  # the chunk was cut away
            raise _body_too_large(limit, rule) from None
        raise
    except BodyReleased as released:
        kept = _account_kept(uploads, info.id, start)
        uploads.metrics.taken_over.inc()
        log.info("upload %s: request taken over after %d bytes (%s)", info.id, kept, released)
        raise errors.taken_over(kept, expected) from None
    except BodyGone:
        kept = _account_kept(uploads, info.id, start)
        raise errors.body_incomplete(kept, expected) from None
    except BlockMismatch as mismatch:
        kept = _account_kept(uploads, info.id, start)
        raise errors.block_checksum_mismatch(
            BLOCK_CHECKSUM_HEADER, str(mismatch), kept, start + kept
        ) from None
    except OSError as error:
        if not errors.is_out_of_space(error):
            raise
        kept = _account_kept(uploads, info.id, start)
        log.warning("upload %s: out of storage space after %d bytes of a request", info.id, kept)
        raise errors.out_of_space(
            f"{kept} bytes of this request were stored and are kept; "
            "resume from Upload-Offset when space is freed",
            {"Upload-Offset": str(start + kept)},
        ) from None
    finally:
        uploads.metrics.open.dec()
        if rule is not None:
            uploads.release_room(info)
    info.offset = start + written
    info.modified = time.time()
    if written:
        uploads.metrics.received_bytes.inc(written)
        uploads.hooks.post_receive(info, written)
    if info.finished:
        return uploads.finish(info)
    return {}


def _account_kept(uploads: Uploads, upload_id: str, start: int) -> int:
    """After a request that ended early: count the bytes it stored (they stay)."""
    current = uploads.store.get(upload_id)
    kept = current.offset - start
    if kept:
        uploads.metrics.received_bytes.inc(kept)
        uploads.hooks.post_receive(current, kept)
    return kept


def _body_too_large(limit: int, rule: str | None) -> errors.TusError:
    if rule is None:
        return errors.too_large("request body", limit)
    return errors.over_limit("request body", f"over the limit ({rule})")


# -- DELETE (termination) ------------------------------------------------------------


def _delete(upload_id: str) -> Response:
    uploads = _uploads()
    _owned(upload_id)
    with uploads.locked(upload_id, take_over=uploads.options.take_over):
        info = uploads.store.get(upload_id)
        uploads.terminate(info)
    uploads.metrics.terminated.inc()
    uploads.hooks.post_terminate(info)
    return _response(204)
