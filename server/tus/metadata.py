"""The ``Upload-Metadata`` header: comma-separated ``key base64(value)`` pairs."""

from __future__ import annotations

import base64
import binascii
import re

from .errors import TusError

_KEY_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_metadata(header: str | None) -> dict[str, str]:
    """Decode the header; a key without a value maps to ``""``.

    Values must be valid base64 of UTF-8 text; keys must be unique tokens.
    Anything else is a 400 naming the offending key.
    """
    if header is None or header.strip() == "":
        return {}
    result: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise TusError(400, f"Upload-Metadata: malformed pair {pair.strip()[:40]!r}")
        key = parts[0]
        if not _KEY_RE.fullmatch(key):
            raise TusError(400, f"Upload-Metadata: invalid key {key[:40]!r}")
        if key in result:
            raise TusError(400, f"Upload-Metadata: duplicate key {key!r}")
        if len(parts) == 1:
            result[key] = ""
            continue
        try:
            raw = base64.b64decode(parts[1], validate=True)
            result[key] = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise TusError(
                400, f"Upload-Metadata: value of {key!r} is not base64-encoded UTF-8"
            ) from None
    return result


def encode_metadata(metadata: dict[str, str]) -> str:
    """Encode a mapping the way clients send it (used for HEAD responses)."""
    pairs = []
    for key, value in metadata.items():
        if value == "":
            pairs.append(key)
        else:
            pairs.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}")
    return ",".join(pairs)
