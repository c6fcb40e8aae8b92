"""Protocol errors as values: each carries its HTTP status and a message.

Raised where a problem is detected; the blueprint turns them into responses in
one place (as tusd's ``pkg/handler/error.go`` does).
"""

from __future__ import annotations


class TusError(Exception):
    """An error answered with ``status`` and a plain-text ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def unsupported_version(supported: str) -> TusError:
    return TusError(
        412,
        f"Tus-Resumable: unsupported or missing protocol version (supported: {supported})",
        {"Tus-Version": supported},
    )


def not_found() -> TusError:
    return TusError(404, "upload not found")


def gone() -> TusError:
    return TusError(410, "upload expired: create a new upload")


def offset_mismatch(expected: int, got: int) -> TusError:
    return TusError(409, f"Upload-Offset: {got} does not match the current offset {expected}")


def bad_header(name: str, rule: str) -> TusError:
    return TusError(400, f"{name}: {rule}")


def too_large(what: str, limit: int) -> TusError:
    return TusError(413, f"{what} exceeds the limit of {limit} bytes")


def over_limit(what: str, rule: str) -> TusError:
    """413 naming the limit that refuses ``what`` (``rule`` names it and its value)."""
    return TusError(413, f"{what}: {rule}")


def wrong_content_type(got: str | None) -> TusError:
    return TusError(
        415, f"Content-Type: must be application/offset+octet-stream (got {got or 'none'!r})"
    )


def locked() -> TusError:
    return TusError(423, "upload is busy: another request is writing to it; retry shortly")


def checksum_mismatch(algorithm: str) -> TusError:
    return TusError(
        460, f"Upload-Checksum: the chunk's {algorithm} digest does not match; chunk discarded"
    )


def final_upload_patch() -> TusError:
    return TusError(403, "a final upload of the concatenation extension cannot be patched")


def method_not_allowed(method: str, allowed: str) -> TusError:
    return TusError(405, f"method {method[:20]} not allowed here", {"Allow": allowed})


def body_incomplete(received: int, expected: int | None) -> TusError:
    total = f" of {expected}" if expected is not None else ""
    return TusError(
        400, f"request body ended after {received}{total} bytes; resume from Upload-Offset"
    )
