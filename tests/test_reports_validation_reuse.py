"""An upload's metadata is validated once per process: the finalization
takes what the creation made of the same metadata, and validates it itself
when the upload was created by another process (another worker, or before a
restart with other settings)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from dqrxfer import contract
from dqrxfer.server.reports import finalize, hooks
from dqrxfer.server.reports.validation import validate_for_settings
from support.inprocess import in_process_server
from support.tus import create, new_upload, patch, report_metadata, write_config

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


def test_the_finalization_reuses_the_creations_validation(
    tmp_path: Path, validations: list[str]
) -> None:
    config = write_config(tmp_path / "config.toml")
    with in_process_server(tmp_path / "data", config) as server:
        url = new_upload(server, len(BODY), metadata=report_metadata("a.txt", revision="4"))
        assert patch(url, 0, BODY).status_code == 204
        assert validations == ["creation"]
        assert server.published("a.txt", revision=4).read_bytes() == BODY
        # Creation with upload: the same, in one request.
        metadata = report_metadata("b.txt", revision="4")
        assert create(server, len(BODY), metadata=metadata, body=BODY).status_code == 201
        assert validations == ["creation", "creation"]
        assert server.published("b.txt", revision=4).read_bytes() == BODY


def test_an_upload_created_by_another_process_is_validated_against_this_ones_settings(
    tmp_path: Path, validations: list[str]
) -> None:
    data = tmp_path / "data"
    with in_process_server(data, write_config(tmp_path / "first.toml")) as first:
        accepted = new_upload(first, len(BODY), metadata=report_metadata("a.txt", revision="5"))
        refused_metadata = report_metadata("b.txt", revision="5", uploader="lho")
        refused = new_upload(first, len(BODY), metadata=refused_metadata)
    assert validations == ["creation", "creation"]
    # Restarted with settings under which LHO may no longer upload.
    with in_process_server(data, write_config(tmp_path / "second.toml", sites=["llo"])) as second:
        accepted = accepted.replace(first.url, second.url)
        refused = refused.replace(first.url, second.url)
        assert patch(accepted, 0, BODY).status_code == 204
        assert second.published("a.txt", revision=5).read_bytes() == BODY
        answer = patch(refused, 0, BODY)
        assert answer.status_code == 422, answer.text
        assert contract.KEY_UPLOADER in answer.text
        assert not second.published("b.txt", revision=5, site="lho").exists()
        assert validations == ["creation", "creation", "finalization", "finalization"]
