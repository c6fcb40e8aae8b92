"""What to upload and how: the user's target and options, and a payload
checked against the report contract before any traffic."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import contract
from .errors import UsageError
from .hints import with_hint
from .payload import DEFAULT_CHUNK_SIZE, MiB, Payload
from .retry import RetryPolicy

#: Payloads at least this large are sent while they are hashed (partial and
#: final upload) when the server can concatenate: one request more, hashing
#: for free.  Below it the hash takes less time than a round trip.
OVERLAP_MIN_SIZE = 64 * MiB


@dataclass(frozen=True)
class ReportTarget:
    """Which report a payload belongs to (the user's options)."""

    project: str
    graceid: str
    uploader: str
    revision: int | str
    subdir: str = ""


@dataclass(frozen=True)
class UploadOptions:
    """How to send.  ``chunk_size`` is the size of one PATCH request;
    ``parallel`` the number of partial uploads for one payload (needs the
    server's concatenation extension; None: chosen from what earlier uploads
    to the server measured, see :mod:`~dqrxfer.linkmemory`); ``checksums`` sends Upload-Checksum
    when the server offers it; ``resume`` uses the resume store;
    ``overlap_min_size``: payloads at least this large are hashed while
    they are sent (needs concatenation too).  ``max_piece``: a PATCH may
    grow to this many bytes (whole chunks) while the link holds, when the
    server takes no chunk checksums or CRC-32 ones; None: ``chunk_size``
    bytes at most (``dqr-upload`` sets it unless ``--chunk-size`` is given).
    ``follow_external_links``: send what symbolic links leading out of their
    directory point to, instead of refusing or skipping them.
    ``block_checksums``: with ``checksums``, check each block of a PATCH
    instead of the whole PATCH when the server can (its ``block-checksum``
    extension; see :mod:`~dqrxfer.blocks`)."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    parallel: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    checksums: bool = True
    resume: bool = True
    as_file: bool = False
    follow_external_links: bool = False
    overlap_min_size: int = OVERLAP_MIN_SIZE
    max_piece: int | None = None
    block_checksums: bool = True

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise UsageError("chunk size: must be at least 1 byte")
        if self.parallel is not None and self.parallel < 1:
            raise UsageError("parallel: must be at least 1")


@dataclass(frozen=True)
class PlannedUpload:
    """A payload and where it goes, checked locally."""

    payload: Payload
    report: contract.ReportUpload

    @property
    def label(self) -> str:
        return self.payload.filename

    def metadata(self, sha256: str) -> dict[str, str]:
        """The upload's metadata, sha256 included."""
        return contract.ReportUpload(**{**self.report.__dict__, "sha256": sha256}).to_metadata()


def describe(payload: Payload, target: ReportTarget) -> contract.ReportUpload:
    """Validate the target and the payload's name locally, before any traffic."""
    try:
        return contract.ReportUpload(
            project=target.project.strip(),
            graceid=contract.validate_graceid(target.graceid),
            site=contract.validate_site(target.uploader),
            revision=contract.validate_revision(target.revision),
            subdir=contract.validate_subdir(target.subdir),
            filename=contract.validate_filename(payload.filename),
            kind=contract.validate_kind(payload.kind),
            sha256=None,
        )
    except contract.ContractError as error:
        raise UsageError(with_hint(error)) from None
