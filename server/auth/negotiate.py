"""SPNEGO (HTTP Negotiate, RFC 4559) on the accepting side, with python-gssapi.

One request carries one token: Kerberos through SPNEGO completes in a single
round trip, so no context is kept between requests.  A token that does not
complete, or fails for any reason (garbage, expired ticket, wrong key, clock
skew), is a :class:`NegotiateError`, which the caller turns into a 401.

The token and the service keys are never logged; only GSSAPI's own message
(for example "Ticket expired") is.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from pathlib import Path
from typing import Any


class NegotiateError(Exception):
    """The token was refused; the message is safe to show and log."""


class Acceptor:
    """Accepts Negotiate tokens with the service keytab.

    ``keytab`` None uses ``$KRB5_KTNAME`` or the system keytab.
    ``service_principal`` None accepts a ticket for any key in the keytab,
    which keeps a server reachable under several host names.
    """

    def __init__(self, keytab: Path | None = None, service_principal: str | None = None) -> None:
        # Only servers in gssapi mode need the library loaded.
        import gssapi
        from gssapi.raw.misc import GSSError

        self._gssapi = gssapi
        self._gss_error = GSSError
        self.keytab = keytab
        self.service_principal = service_principal
        #: the credentials and the process that acquired them: a worker forked
        #: from a master that checked the keytab acquires its own
        self._creds: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    def credentials(self) -> Any:
        """The acceptor credentials, acquired once per process.

        Acquiring them does not read the keys (that happens per token), so a
        replaced keytab takes effect without a restart.
        """
        with self._lock:
            if self._creds is None or self._creds[0] != os.getpid():
                gssapi = self._gssapi
                name = None
                if self.service_principal:
                    name = gssapi.Name(self.service_principal, gssapi.NameType.kerberos_principal)
                store = {"keytab": str(self.keytab)} if self.keytab else None
                credentials = gssapi.Credentials(usage="accept", name=name, store=store)
                self._creds = (os.getpid(), credentials)
            return self._creds[1]

    def check(self) -> None:
        """Fail early (at server start) when the keytab cannot be used."""
        try:
            self.credentials()
        except self._gss_error as error:
            raise NegotiateError(f"cannot use the service keytab: {error.gen_message()}") from None

    def accept(self, token_b64: str) -> tuple[str, str | None]:
        """Accept one token; return the initiator's principal and the mutual
        authentication token (base64) to send back, if any."""
        try:
            token = base64.b64decode(token_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise NegotiateError("the Negotiate token is not base64") from None
        if not token:
            raise NegotiateError("the Negotiate token is empty")
        gssapi = self._gssapi
        try:
            context = gssapi.SecurityContext(creds=self.credentials(), usage="accept")
            reply = context.step(token)
            # With SPNEGO a failure may surface only here: python-gssapi keeps
            # the error of step() and raises it on the next attribute access.
            if not context.complete:
                raise NegotiateError("the Negotiate exchange needs more than one round trip")
            principal = str(context.initiator_name)
        except self._gss_error as error:
            raise NegotiateError(_describe(error)) from None
        except NegotiateError:
            raise
        except Exception as error:  # a token must never turn into a 500
            kind = type(error).__name__
            raise NegotiateError(f"the token could not be processed ({kind})") from None
        return principal, base64.b64encode(reply).decode("ascii") if reply else None


def _describe(error: Any) -> str:
    """GSSAPI's message without the numeric codes, e.g. 'Ticket expired'."""
    message: str
    try:
        message = error.gen_message()
    except Exception:
        message = type(error).__name__
    minor = message.rsplit("Minor (", 1)
    if len(minor) == 2 and "): " in minor[1]:
        text = minor[1].split("): ", 1)[1].strip()
        if text and text not in ("Unknown error", "Success"):
            return text
    major = message.split("): ", 1)
    return (major[1].split(", Minor")[0] if len(major) == 2 else message).strip()
