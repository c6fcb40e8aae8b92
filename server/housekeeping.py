"""``dqrxfer-server cleanup``: run the housekeeping and say what it did.

The work is the tus layer's sweep (:meth:`~.tus.Uploads.sweep`) and the
reports' staging cleanup (:func:`~.reports.admin.remove_stale_staging`); this
module names each upload the way an operator knows it (project, graceid,
site, revision and file, from the upload's metadata), tells apart what the
sweep lumps together (an unfinished upload that expired, a complete partial
upload that a final upload already joined), and ends with one summary whose
words are those of the lines above it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import select

from dqrxfer import contract

from .config import Settings
from .db import Database, Upload
from .db.presence import require_data_dir
from .reports import admin
from .services import Services, build_services, open_database
from .tus import UploadInfo
from .tus.errors import TusError
from .tus.lifecycle import SweepReport

#: The report metadata an upload line shows, in this order, with its label.
_SHOWN_KEYS = (
    ("project", contract.KEY_PROJECT),
    ("graceid", contract.KEY_GRACEID),
    ("site", contract.KEY_UPLOADER),
    ("revision", contract.KEY_REVISION),
)
_LONGEST_VALUE = 120


def run(settings: Settings, dry_run: bool, staging_age: float) -> int:
    """Clean up as ``settings`` say; print a line per upload or directory and
    a summary.  Returns the exit status (0: every failure is an exception).

    A missing data directory is an error (:class:`~.db.presence.Missing`):
    there is nothing to clean up, and a mistyped ``--data-dir`` gets no
    directories made for it."""
    require_data_dir(settings.data_dir)
    if dry_run:  # changes nothing, the schema included: behind the code, it says so
        settings = replace(settings, auto_upgrade=False)
    if dry_run and not settings.uploads_dir.is_dir():
        # No uploads to look at, and a dry run creates nothing: the store and
        # its file locks would make the uploads directory and its locks.  The
        # database is still checked (reachable, its schema not behind the code).
        open_database(settings).dispose()
        known: dict[str, UploadInfo] = {}
        finals: dict[str, str] = {}
        states: dict[str, str] = {}
        report = SweepReport()
    else:
        known, finals, report, states = _sweep(settings, dry_run)
    staging = admin.remove_stale_staging(settings, staging_age, dry_run)
    outcome = _Outcome.of(report, staging, finals, states, known, dry_run)
    for line in outcome.lines:
        print(line)
    for line in outcome.warnings:
        print(line, file=sys.stderr)
    print(outcome.summary())
    return 0


def _sweep(
    settings: Settings, dry_run: bool
) -> tuple[dict[str, UploadInfo], dict[str, str], SweepReport, dict[str, str]]:
    """The uploads in the store, the final upload joining each partial one,
    what the sweep did, and the recorded states of the uploads it names."""
    built = build_services(settings)
    try:
        known = _uploads_in_store(built)
        finals = _finals_by_partial(known.values())
        report = built.uploads.sweep(dry_run=dry_run)
        joining = [finals[info.id] for info in report.expired if info.id in finals]
        states = _recorded_states(
            built.database, [info.id for info in [*report.retired, *report.recovered]] + joining
        )
    finally:
        built.close()
    return known, finals, report, states


def _uploads_in_store(built: Services) -> dict[str, UploadInfo]:
    """Every upload the store can read now, before the sweep removes any: what
    the lines say about an upload comes from here."""
    found: dict[str, UploadInfo] = {}
    for upload_id in list(built.store.upload_ids()):
        try:
            found[upload_id] = built.store.get(upload_id)
        except TusError:
            continue  # gone meanwhile, or a leftover: the sweep names it by id
    return found


def _finals_by_partial(uploads: Iterable[UploadInfo]) -> dict[str, str]:
    """For each partial upload that a final upload joins, that final upload's id."""
    return {partial: info.id for info in uploads if info.is_final for partial in info.partials}


def _recorded_states(database: Database, upload_ids: list[str]) -> dict[str, str]:
    """What the database recorded of these uploads (``published``, ``failed``...)."""
    if not upload_ids:
        return {}
    with database.session() as session:
        rows = session.execute(
            select(Upload.id, Upload.state).where(Upload.id.in_(set(upload_ids)))
        )
        return {upload_id: state for upload_id, state in rows}


#: How the lines name what the database recorded of an upload.
_STATE_WORDS = {"published": "published", "failed": "refused"}


def _became(states: Mapping[str, str], upload_id: str) -> str:
    """What became of an upload, as the database recorded it."""
    state = states.get(upload_id)
    return _STATE_WORDS.get(state, state) if state else "not recorded"


#: What ``cleanup`` counts: each kind has its lines and its place in the summary.
EXPIRED = "expired"
PARTIAL = "partial"
RETIRED = "retired"
RECOVERED = "recovered"
LEFTOVERS = "leftovers"
TEMPORARIES = "temporaries"
STAGING = "staging"
SKIPPED = "skipped"

#: Each kind's words in the summary, singular and plural: those of its lines.
_NOUNS: dict[str, tuple[str, str]] = {
    EXPIRED: ("expired upload", "expired uploads"),
    PARTIAL: ("finished partial upload", "finished partial uploads"),
    RETIRED: ("finished upload past retention", "finished uploads past retention"),
    RECOVERED: ("interrupted upload", "interrupted uploads"),
    LEFTOVERS: ("remains of unusable upload", "remains of unusable uploads"),
    TEMPORARIES: ("stale temporary file", "stale temporary files"),
    STAGING: ("stale staging directory", "stale staging directories"),
    SKIPPED: ("upload", "uploads"),
}


@dataclass
class _Outcome:
    """What one cleanup did (or, in a dry run, would do), as lines to print."""

    dry_run: bool
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        report: SweepReport,
        staging: list[Path],
        finals: Mapping[str, str],
        states: Mapping[str, str],
        known: Mapping[str, UploadInfo],
        dry_run: bool,
    ) -> _Outcome:
        outcome = cls(dry_run)
        remove = "would remove" if dry_run else "removed"
        expired = [info for info in report.expired if not (info.is_partial and info.finished)]
        joined = [info for info in report.expired if info.is_partial and info.finished]
        for info in expired:
            outcome.add(EXPIRED, f"{remove} expired upload {_named(info)}: {_received(info)}")
        for info in joined:
            final = finals.get(info.id)
            if final is None:
                what = "complete, but no final upload kept joins it"
            else:
                what = f"joined into final upload {final} ({_became(states, final)})"
            line = f"{remove} finished partial upload {_named(info)}: {what}, {info.offset} bytes"
            outcome.add(PARTIAL, line)
        for info in report.retired:
            outcome.add(
                RETIRED,
                f"{remove} finished upload {_named(info)}: past retention, {info.offset} bytes, "
                f"{_became(states, info.id)}",
            )
        for info in report.recovered:
            became = "ready to be joined" if info.is_partial else _became(states, info.id)
            outcome.add(RECOVERED, f"finished interrupted upload {_named(info)}: {became}")
        for upload_id in report.leftovers:
            outcome.add(LEFTOVERS, f"removed remains of unusable upload {upload_id}")
        for path in staging:
            outcome.add(STAGING, f"{remove} stale staging directory {path}")
        for upload_id, reason in report.skipped:
            upload = known.get(upload_id)
            named = _named(upload) if upload is not None else upload_id
            outcome.warnings.append(f"skipped upload {named}: {reason}")
        outcome.counts[SKIPPED] = len(report.skipped)
        outcome.counts[TEMPORARIES] = report.temporaries
        return outcome

    def add(self, kind: str, line: str) -> None:
        self.lines.append(line)
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def summary(self) -> str:
        def count(kind: str) -> str:
            return _counted(self.counts.get(kind, 0), *_NOUNS[kind])

        removed = [count(EXPIRED), count(PARTIAL), count(RETIRED), count(STAGING)]
        if self.dry_run:
            return (
                f"would remove: {', '.join(removed)}; not looked at (dry run): interrupted "
                "uploads, remains of unusable uploads, stale temporary files"
            )
        removed += [count(LEFTOVERS), count(TEMPORARIES)]
        return (
            f"removed: {', '.join(removed)}; finished: {count(RECOVERED)}; "
            f"skipped: {count(SKIPPED)}"
        )


def _counted(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


def _named(info: UploadInfo) -> str:
    """The upload's id and the report and file it carries, from its metadata."""
    metadata = info.metadata
    parts = [f"{label} {_shown(metadata[key])}" for label, key in _SHOWN_KEYS if metadata.get(key)]
    filename = metadata.get(contract.KEY_FILENAME)
    if filename:
        subdir = metadata.get(contract.KEY_SUBDIR)
        parts.append(f"file {_shown(f'{subdir}/{filename}' if subdir else filename)}")
    return f"{info.id} ({', '.join(parts) if parts else 'no report metadata'})"


def _shown(value: str) -> str:
    """A metadata value as a line may show it: one line, not too long."""
    if len(value) > _LONGEST_VALUE:
        value = value[: _LONGEST_VALUE - 3] + "..."
    return repr(value) if contract.has_control_chars(value) or " " in value else value


def _received(info: UploadInfo) -> str:
    if info.length is None:
        return f"{info.offset} bytes received, length not declared"
    return f"{info.offset} of {info.length} bytes received"
