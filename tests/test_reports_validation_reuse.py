"""An upload's metadata is validated once per process: the finalization
takes what the creation made of the same metadata, and validates it itself
when the upload was created by another process (another worker, or before a
restart with other settings)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dqrxfer import contract
from dqrxfer.server.reports import finalize, hooks
from dqrxfer.server.reports.validation import validate_for_settings
from support.inprocess import InProcessServer
from support.tus import encode_metadata, report_metadata, write_config

BODY = b"validated once\n"


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every validation of report metadata, by who asked for it."""
    made: list[str] = []

    def counting(where: str):  # type: ignore[no-untyped-def]
        def validate(metadata: Mapping[str, str | None], settings: object) -> object:
            made.append(where)
            return validate_for_settings(metadata, settings)  # type: ignore[arg-type]

        return validate

    monkeypatch.setattr(hooks, "validate_for_settings", counting("creation"))
    monkeypatch.setattr(finalize, "validate_for_settings", counting("finalization"))
    return made


def _create(client: FlaskClient, metadata: dict[str, str]) -> str:
    reply = client.post(
        "/files/",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(BODY)),
            "Upload-Metadata": encode_metadata(metadata),
        },
    )
    assert reply.status_code == 201, reply.get_data(as_text=True)
    return "/files/" + reply.headers["Location"].rstrip("/").rsplit("/", 1)[1]


def _send(client: FlaskClient, path: str) -> tuple[int, str]:
    reply = client.patch(
        path,
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        data=BODY,
    )
    return reply.status_code, reply.get_data(as_text=True)


def test_the_finalization_reuses_the_creations_validation(
    tmp_path: Path, validations: list[str]
) -> None:
    server = InProcessServer(tmp_path / "data", write_config(tmp_path / "config.toml"))
    try:
        client = server.app.test_client()
        path = _create(client, report_metadata("a.txt", revision="4"))
        assert _send(client, path) == (204, "")
        assert validations == ["creation"]
        assert server.published("a.txt", revision=4).read_bytes() == BODY
        # Creation with upload: the same, in one request.
        reply = client.post(
            "/files/",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(len(BODY)),
                "Upload-Metadata": encode_metadata(report_metadata("b.txt", revision="4")),
                "Content-Type": "application/offset+octet-stream",
            },
            data=BODY,
        )
        assert reply.status_code == 201, reply.get_data(as_text=True)
        assert validations == ["creation", "creation"]
        assert server.published("b.txt", revision=4).read_bytes() == BODY
    finally:
        server.dispose()


def test_an_upload_created_by_another_process_is_validated_against_this_ones_settings(
    tmp_path: Path, validations: list[str]
) -> None:
    data = tmp_path / "data"
    first = InProcessServer(data, write_config(tmp_path / "first.toml"))
    try:
        client = first.app.test_client()
        accepted = _create(client, report_metadata("a.txt", revision="5"))
        refused = _create(client, report_metadata("b.txt", revision="5", uploader="lho"))
    finally:
        first.dispose()
    assert validations == ["creation", "creation"]
    # Restarted with settings under which LHO may no longer upload.
    second = InProcessServer(data, write_config(tmp_path / "second.toml", sites=["llo"]))
    try:
        client = second.app.test_client()
        assert _send(client, accepted) == (204, "")
        assert second.published("a.txt", revision=5).read_bytes() == BODY
        status, message = _send(client, refused)
        assert status == 422, message
        assert contract.KEY_UPLOADER in message
        assert not second.published("b.txt", revision=5, site="lho").exists()
        assert validations == ["creation", "creation", "finalization", "finalization"]
    finally:
        second.dispose()
