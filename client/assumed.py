"""The first upload made before the server's capabilities are known.

On a first contact with a server the client asks OPTIONS and the links API
at once (:mod:`~dqrxfer.settlement`); creating the first upload only after
OPTIONS answered cost a round trip before the first byte (0.3 s to KAGRA or
EGO).  So the first upload is created at once, as for a server that answers
what a dqrxfer server answers with its defaults (:data:`EXPECTED`), and held
before its first byte (with the :mod:`~dqrxfer.gate`) until the answer is in:
if the server's answer would send the payload in the same way
(:func:`sends_alike`: the same extensions used, the same chunk checksum, a
size within its limit) the upload goes on; otherwise it is terminated
(``DELETE``, no byte sent) and made again as the answer says
(:class:`Mistaken`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .blocks import EXTENSION as BLOCK_CHECKSUM
from .payload import choose_checksum
from .transport import TUS_VERSION, Capabilities

#: The extensions whose presence changes how the client sends a payload.
USED_EXTENSIONS = (
    "checksum",
    BLOCK_CHECKSUM,
    "concatenation",
    "concatenation-unfinished",
    "creation-with-upload",
)

#: What a dqrxfer server answers to OPTIONS with its defaults, as far as the
#: client uses it (the size limit aside, which :func:`sends_alike` checks
#: against the payload).
EXPECTED = Capabilities(
    versions=(TUS_VERSION,),
    extensions=frozenset({"creation", *USED_EXTENSIONS}),
    checksum_algorithms=("crc32", "sha1", "sha256", "md5"),
)


def sends_alike(size: int, assumed: Capabilities, actual: Capabilities) -> bool:
    """Whether a payload of ``size`` bytes goes to a server answering
    ``actual`` as it goes to one answering ``assumed``: every choice the
    client makes from the answer (the extensions of :data:`USED_EXTENSIONS`,
    the chunk checksum, the size limit) comes out the same."""
    return (
        all(assumed.has(name) == actual.has(name) for name in USED_EXTENSIONS)
        and choose_checksum(assumed.checksum_algorithms)
        == choose_checksum(actual.checksum_algorithms)
        and (actual.max_size is None or size <= actual.max_size)
        and (assumed.max_size is None or size <= assumed.max_size)
    )


class Mistaken(Exception):
    """The server's capabilities are not the ones an upload was made with:
    the upload was terminated, to be made again as the server's answer says."""

    def __init__(self, actual: Capabilities) -> None:
        super().__init__("the server's capabilities differ from those assumed")
        self.actual = actual


@dataclass
class Assumption:
    """Capabilities assumed (``assumed``) for a payload of ``size`` bytes
    until ``ask()`` (the server's answer, waited for) says otherwise."""

    assumed: Capabilities
    size: int
    ask: Callable[[], Capabilities]
    actual: Capabilities | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def checked(self) -> bool:
        """Whether the server's answer is in."""
        return self.actual is not None

    def confirm(self) -> None:
        """Return once the server's answer is in and sends the payload alike;
        raise :class:`Mistaken` if it does not (or what asking raised)."""
        with self._lock:
            if self.actual is None:
                self.actual = self.ask()
        if not sends_alike(self.size, self.assumed, self.actual):
            raise Mistaken(self.actual)
