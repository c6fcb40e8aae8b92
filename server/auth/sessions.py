"""Session cookies: after one Negotiate handshake, a signed, short-lived cookie
names the principal, so the PATCH requests of an upload need no new handshake.

The cookie holds the principal and a timestamp, signed with HMAC
(itsdangerous).  It is HttpOnly and SameSite=Strict, Secure over HTTPS.  The
signing key comes from the configuration or from a file in the data
directory, created once with mode 0600 and shared by every worker and host
that shares the data directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "dqrxfer.session.v1"


class SecretFileError(Exception):
    """The secret file is unusable (unreadable, or readable by others)."""


def load_or_create_secret(path: Path) -> str:
    """Read the secret from ``path``; create it (0600, atomically) if missing.

    Several workers may start at once: the file is written under a temporary
    name and linked into place, so nobody reads a half-written secret and the
    first writer wins.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    with open(path, encoding="ascii") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretFileError(f"{path}: the session secret is readable by others; chmod 600 it")
        secret = handle.read().strip()
    if len(secret) < 32:
        raise SecretFileError(f"{path}: the session secret is shorter than 32 characters")
    return secret


class SessionSigner:
    """Issues and checks session cookie values."""

    def __init__(self, secret: str, lifetime: int) -> None:
        self.lifetime = lifetime
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)

    def issue(self, principal: str) -> str:
        return self._serializer.dumps({"p": principal})

    def verify(self, value: str) -> str | None:
        """The principal a valid, unexpired cookie names; None otherwise."""
        try:
            data = self._serializer.loads(value, max_age=self.lifetime)
        except (SignatureExpired, BadSignature):
            return None
        principal = data.get("p") if isinstance(data, dict) else None
        return principal if isinstance(principal, str) and principal else None

    @property
    def cookie_max_age(self) -> int:
        """What the client is told: a little less than the server accepts, so a
        cookie the client still sends is never one the server just expired."""
        return max(1, self.lifetime - min(60, self.lifetime // 10))
