"""The front ends serve report files through links only inside what the app's
user owns: the shipped nginx (``disable_symlinks if_not_owner``) and Apache
(``Options SymLinksIfOwnerMatch``) configurations, run for real, against a
report tree with links planted on disk past the app's checks.

The tree is owned as in production: by the app's user (here ``nobody``), not
by root, who owns ``/etc/passwd`` and the secret planted beside the data
directory.  Links inside the report are served; links to those files are
refused, though the front end's user could read them.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.deployment import apache_available, deployed
from support.kerberos import Realm
from support.live import free_port
from support.proxies import Nginx, needs_nginx
from support.trees import plant


@pytest.fixture
def data_dir(front_end_data_dir: Path) -> Path:
    """The server's data directory where the front end's workers can read it."""
    return front_end_data_dir


REPORT = Path("O4/S230518h_dir/S230518h_llo_1")
#: A report whose index.html is a link out: reached through the directory URL
#: the front ends answer with index.html (or pass to the app's listing).
LINKED_INDEX = Path("O4/S230518h_dir/S230518h_lho_1")
SECRET = "not for the web"
PASSWD = Path("/etc/passwd").read_text().split("\n", 1)[0]


def owned_report(reports: Path) -> None:
    """A report with links in and out, owned by the app's user; a root-owned
    secret beside the data directory, readable by anyone."""
    report = reports / REPORT
    secret = reports.parent.parent / "secret.txt"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    links = {
        "home.html": "index.html",
        "latest": "tier1",
        "secret.txt": os.path.relpath(secret, report),
        "passwd": "/etc/passwd",
    }
    plant(report, links, {"index.html": "<html>report</html>", "tier1/data.json": "{}"})
    linked = plant(
        reports / LINKED_INDEX, {"index.html": os.path.relpath(secret, reports / LINKED_INDEX)}
    )
    owner = pwd.getpwnam("nobody")
    for path in [report, *report.rglob("*"), linked, *linked.rglob("*")]:
        os.lchown(path, owner.pw_uid, owner.pw_gid)
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    # The front end's user must be able to walk down to the tree (it lives in
    # a temporary directory of its own).
    for directory in (reports, *reports.parents):
        mode = directory.stat().st_mode
        if mode & 0o001 == 0:
            directory.chmod(mode | 0o011)
    for directory in (reports / REPORT).parents:
        if directory.is_relative_to(reports):
            directory.chmod(0o755)


def served(base: str, verify: str) -> dict[str, tuple[int, str]]:
    answers = {}
    for name in ("index.html", "home.html", "latest/data.json", "secret.txt", "passwd"):
        answer = requests.get(f"{base}/reports/{REPORT}/{name}", verify=verify, timeout=30)
        answers[name] = (answer.status_code, answer.text if answer.status_code == 200 else "")
    answer = requests.get(f"{base}/reports/{LINKED_INDEX}/", verify=verify, timeout=30)
    # (refused, leaked): nginx finds no index.html it may open and passes the
    # URL on to the app (none here: 502), Apache refuses the link (403).
    answers["linked index"] = (answer.status_code in (403, 404, 502), SECRET in answer.text)
    return answers


INSIDE_ONLY = {
    "index.html": (200, "<html>report</html>"),
    "home.html": (200, "<html>report</html>"),
    "latest/data.json": (200, "{}"),
    "secret.txt": (403, ""),
    "passwd": (403, ""),
    "linked index": (True, False),
}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners are set with lchown")


@needs_root
@needs_nginx
def test_nginx_follows_no_link_out_of_the_owners_files(data_dir: Path, tmp_path: Path) -> None:
    reports = data_dir / "reports"
    owned_report(reports)
    # Reports are served by nginx itself: no app needed behind it.
    nginx = Nginx(tmp_path / "nginx", free_port(), reports)
    try:
        nginx.start()
        assert served(nginx.url, str(nginx.cert)) == INSIDE_ONLY
    finally:
        nginx.stop()


@pytest.fixture
def apache_reports(kerberos: Realm, data_dir: Path) -> Iterator[tuple[Realm, Path]]:
    if not apache_available():
        pytest.skip("apache2 or libapache2-mod-auth-gssapi missing")
    owned_report(data_dir / "reports")
    yield kerberos, data_dir


@needs_root
def test_apache_follows_no_link_out_of_the_owners_files(
    apache_reports: tuple[Realm, Path],
) -> None:
    realm, data_dir = apache_reports
    with deployed(realm, data_dir) as deployment:
        assert served(deployment.url, str(deployment.apache.cert)) == INSIDE_ONLY
    # What the option is for: with FollowSymLinks (the file before), both leak.
    followed = {"Options SymLinksIfOwnerMatch": "Options FollowSymLinks"}
    with deployed(realm, data_dir, site_replacements=followed) as deployment:
        leaked = served(deployment.url, str(deployment.apache.cert))
    assert leaked["secret.txt"] == (200, SECRET)
    assert leaked["linked index"] == (False, True)
    assert leaked["passwd"][0] == 200 and PASSWD in leaked["passwd"][1]
