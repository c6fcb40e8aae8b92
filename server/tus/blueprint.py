"""The tus 1.0.0 protocol as a Flask blueprint: one function per HTTP verb.

Every request passes through :func:`_check_version` (412 unless OPTIONS) and
every :class:`~.errors.TusError` becomes a plain-text response with its status
in :func:`_error_response`.  Storage, locking and the application's rules are
reached only through the store, the locker and the hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, request, url_for

from . import errors
from .hooks import TusHooks
from .locker import Locker
from .metadata import encode_metadata, parse_metadata
from .store import FileStore, UploadInfo

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"


@dataclass
class TusOptions:
    """Protocol settings of one mounted endpoint."""

    max_size: int = 64 * 1024**3
    lock_timeout: float = 10.0


@dataclass
class _Context:
    store: FileStore
    locker: Locker
    hooks: TusHooks
    options: TusOptions
    identify: Callable[[], str | None]


def _ctx() -> _Context:
    return current_app.extensions["tus"]


def _base_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}


def _response(status: int, headers: dict[str, str] | None = None, body: str = "") -> Response:
    merged = _base_headers()
    merged.update(headers or {})
    return Response(body, status=status, headers=merged, mimetype="text/plain")


def _error_response(error: errors.TusError) -> Response:
    return _response(error.status, error.headers, error.message + "\n")


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


def _upload_url(upload_id: str) -> str:
    return url_for("tus.upload", upload_id=upload_id, _external=True)


def make_blueprint(
    store: FileStore,
    locker: Locker,
    hooks: TusHooks | None = None,
    options: TusOptions | None = None,
    url_prefix: str = "/files",
    identify: Callable[[], str | None] | None = None,
) -> Blueprint:
    """Build the blueprint; the app registering it gets the context in ``extensions``.

    ``identify`` names the caller of the current request (the application
    authenticates).  An upload belongs to whoever created it: it is stored as
    ``info.owner``, and anyone else is told the upload does not exist (404).
    """
    blueprint = Blueprint("tus", __name__, url_prefix=url_prefix)
    context = _Context(
        store, locker, hooks or TusHooks(), options or TusOptions(), identify or _nobody
    )

    @blueprint.record_once
    def _install(state) -> None:  # type: ignore[no-untyped-def]
        state.app.extensions["tus"] = context

    blueprint.before_request(_check_version)
    blueprint.register_error_handler(errors.TusError, _error_response)

    blueprint.add_url_rule("/", "collection", _collection, methods=["OPTIONS", "POST"])
    blueprint.add_url_rule("", "collection_noslash", _collection, methods=["OPTIONS", "POST"])
    blueprint.add_url_rule("/<upload_id>", "upload", _upload, methods=["OPTIONS", "HEAD", "PATCH"])
    return blueprint


def _nobody() -> None:
    return None


def _owned(upload_id: str) -> UploadInfo:
    """The upload, if the caller owns it; 404 otherwise (its existence is not revealed)."""
    context = _ctx()
    info = context.store.get(upload_id)
    if info.owner != context.identify():
        raise errors.not_found()
    return info


def _collection() -> Response:
    if request.method == "OPTIONS":
        return _options()
    return _post()


def _upload(upload_id: str) -> Response:
    if request.method == "OPTIONS":
        return _options()
    if request.method == "HEAD":
        return _head(upload_id)
    return _patch(upload_id)


def _options() -> Response:
    context = _ctx()
    return _response(
        204,
        {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": "creation",
            "Tus-Max-Size": str(context.options.max_size),
        },
    )


def _post() -> Response:
    context = _ctx()
    length = _parse_non_negative("Upload-Length", request.headers.get("Upload-Length"))
    if length is None:
        raise errors.bad_header("Upload-Length", "is required")
    if length > context.options.max_size:
        raise errors.too_large("Upload-Length", context.options.max_size)
    metadata = parse_metadata(request.headers.get("Upload-Metadata"))
    info = UploadInfo(id="", length=length, metadata=metadata, owner=context.identify())
    context.hooks.pre_create(info)
    info = context.store.create(info)
    context.hooks.post_create(info)
    headers = {"Location": _upload_url(info.id), "Upload-Offset": "0"}
    if info.finished:
        headers.update(context.hooks.post_finish(info))
    return _response(201, headers)


def _head(upload_id: str) -> Response:
    info = _owned(upload_id)
    headers = {"Upload-Offset": str(info.offset)}
    if info.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(info.length)
    if info.metadata:
        headers["Upload-Metadata"] = encode_metadata(info.metadata)
    return _response(200, headers)


def _patch(upload_id: str) -> Response:
    context = _ctx()
    content_type = request.headers.get("Content-Type")
    if content_type is None or content_type.split(";")[0].strip() != OFFSET_CONTENT_TYPE:
        raise errors.wrong_content_type(content_type)
    offset = _parse_non_negative("Upload-Offset", request.headers.get("Upload-Offset"))
    if offset is None:
        raise errors.bad_header("Upload-Offset", "is required")
    body_length = request.content_length
    _owned(upload_id)  # before the lock: a busy upload of someone else's is still a 404
    with context.locker.lock(upload_id):
        info = context.store.get(upload_id)
        if offset != info.offset:
            raise errors.offset_mismatch(info.offset, offset)
        assert info.length is not None  # deferred length arrives with the extension
        remaining = info.length - info.offset
        if body_length is not None and body_length > remaining:
            raise errors.too_large("request body", remaining)
        stream = request.stream
        written = context.store.write_chunk(upload_id, offset, stream.read, remaining)
        if body_length is None and written == remaining and stream.read(1):
            context.store.truncate(upload_id, offset)
            raise errors.too_large("request body", remaining)
        info.offset = offset + written
        context.hooks.post_receive(info, written)
        headers = {"Upload-Offset": str(info.offset)}
        if info.finished:
            headers.update(context.hooks.post_finish(info))
    return _response(204, headers)
