"""Symbolic links that lead out of what is uploaded are not followed unless asked.

A report directory holding ``netrc -> ~/.netrc`` must not publish the file:
the packing decision is checked on its own, then with the real dqr-upload
against a real server (the published report, and what the server serves).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests

from dqrxfer.errors import PayloadChangedError, UsageError
from dqrxfer.packing import collect_members
from dqrxfer.payload import payload_for
from support.cli import run_cli
from support.live import LiveServer
from support.tus import dqr_upload_command

SECRET = b"machine dqr.example.org login albert password not-for-publication\n"


def make_report(tmp_path: Path) -> tuple[Path, Path]:
    """A report directory with links of every kind, and the secret file
    outside it that one of them points to."""
    secret = tmp_path / "home" / "netrc-file"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "plot.png").write_bytes(b"a plot of a sibling directory")
    report = tmp_path / "S230518h_llo_1"
    (report / "plots").mkdir(parents=True)
    (report / "index.html").write_text("<html>report</html>")
    links = {
        "netrc": secret,  # absolute, outside
        "sibling.png": Path("../shared/plot.png"),  # relative, a sibling directory
        "same.html": Path("index.html"),  # inside
        "plots/up.html": Path("../index.html"),  # inside, from a subdirectory
        "detour.html": Path("../S230518h_llo_1/index.html"),  # out and back in
        "chain-out": Path("netrc"),  # a link to a link that leads out
        "shared-dir": Path("../shared"),  # a link to a directory outside
        "plots-dir": Path("plots"),  # a link to a directory inside
        "via-dir.png": Path("shared-dir/plot.png"),  # through a link to a directory outside
    }
    for name, target in links.items():
        (report / name).symlink_to(target)
    return report, secret


INSIDE = {"index.html", "same.html", "plots/up.html", "detour.html"}
OUTSIDE = {"netrc", "sibling.png", "chain-out", "via-dir.png"}
DIRECTORY_LINKS = {"shared-dir", "plots-dir"}


def file_names(root: Path, follow_external_links: bool) -> set[str]:
    members = collect_members(root, follow_external_links)
    return {member.name for member in members if not member.is_dir}


def test_links_leading_out_are_skipped_with_a_warning_naming_them_and_their_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    report, secret = make_report(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dqr-xfer"):
        assert file_names(report, follow_external_links=False) == INSIDE
    assert f"skipping netrc: a symbolic link to {secret}, outside {report}" in caplog.text
    assert f"skipping sibling.png: a symbolic link to {tmp_path / 'shared/plot.png'}" in caplog.text
    for name in OUTSIDE:
        assert f"skipping {name}: a symbolic link to " in caplog.text
    for name in DIRECTORY_LINKS:
        assert f"skipping {name}: a symbolic link to a directory" in caplog.text
    for name in INSIDE:
        assert f"skipping {name}:" not in caplog.text


def test_follow_external_links_includes_them_as_the_files_they_point_to(tmp_path: Path) -> None:
    report, secret = make_report(tmp_path)
    assert file_names(report, follow_external_links=True) == INSIDE | OUTSIDE
    payload = payload_for(report, follow_external_links=True)
    netrc = next(member for member in payload.members if member.name == "netrc")  # type: ignore[attr-defined]
    assert netrc.size == len(SECRET) and netrc.path.resolve() == secret


def test_a_directory_reached_through_a_link_is_judged_by_where_it_really_is(
    tmp_path: Path,
) -> None:
    report, _ = make_report(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    alias = tmp_path / "elsewhere" / "report-alias"
    alias.symlink_to(report)
    assert file_names(alias, follow_external_links=False) == INSIDE


def test_a_link_turned_outwards_after_packing_is_not_read(tmp_path: Path) -> None:
    report, secret = make_report(tmp_path)
    payload = payload_for(report)
    (report / "same.html").unlink()
    (report / "same.html").symlink_to(secret)  # what is read is the file that was checked
    with pytest.raises(PayloadChangedError, match="same.html"):
        b"".join(payload.blocks(0, payload.size))


def test_a_named_path_that_is_a_link_leading_out_is_refused(tmp_path: Path) -> None:
    report, secret = make_report(tmp_path)
    with pytest.raises(UsageError, match=f"netrc: a symbolic link to {secret}, outside"):
        payload_for(report / "netrc")
    with pytest.raises(UsageError, match="shared-dir: a symbolic link to .*shared, outside"):
        payload_for(report / "shared-dir")
    assert payload_for(report / "same.html").size == len("<html>report</html>")
    assert payload_for(report / "netrc", follow_external_links=True).size == len(SECRET)


def upload_command(server: LiveServer, revision: int, *args: str) -> list[str]:
    return dqr_upload_command(server.url, *args, revision=revision)


def published_bytes(root: Path) -> list[bytes]:
    return [path.read_bytes() for path in root.rglob("*") if path.is_file()]


def test_dqr_upload_does_not_publish_what_a_link_out_of_the_report_points_to(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    report, secret = make_report(tmp_path)

    result = run_cli(*upload_command(live_server, 1, str(report)), env=client_env)
    assert result.returncode == 0, result.stderr
    assert f"WARNING:dqr-xfer:skipping netrc: a symbolic link to {secret}" in result.stderr
    assert "skipping via-dir.png: a symbolic link to " in result.stderr
    published = live_server.published(revision=1)
    names = {str(path.relative_to(published)) for path in published.rglob("*") if path.is_file()}
    assert names == INSIDE
    assert SECRET not in published_bytes(published)
    url = result.stdout.strip()
    assert requests.get(url + "netrc", timeout=10).status_code == 404
    assert requests.get(url + "same.html", timeout=10).text == "<html>report</html>"

    result = run_cli(
        *upload_command(live_server, 2, "--follow-external-links", str(report)), env=client_env
    )
    assert result.returncode == 0, result.stderr
    assert "skipping netrc" not in result.stderr
    assert live_server.published("netrc", revision=2).read_bytes() == SECRET
    assert not live_server.published("netrc", revision=2).is_symlink()
    assert requests.get(result.stdout.strip() + "netrc", timeout=10).content == SECRET


def test_dqr_upload_refuses_a_named_link_out_of_its_directory(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    report, secret = make_report(tmp_path)
    index, netrc = str(report / "index.html"), str(report / "netrc")

    result = run_cli(*upload_command(live_server, 1, index, netrc), env=client_env)
    assert result.returncode == 2, result.stderr
    assert f"{netrc}: a symbolic link to {secret}, outside" in result.stderr
    assert "--follow-external-links" in result.stderr
    assert not live_server.published(revision=1).exists()  # nothing sent, not even index.html

    result = run_cli(
        *upload_command(live_server, 1, "--follow-external-links", index, netrc), env=client_env
    )
    assert result.returncode == 0, result.stderr
    assert live_server.published("netrc").read_bytes() == SECRET
