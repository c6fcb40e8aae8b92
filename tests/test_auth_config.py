"""The ``[auth]`` configuration, principal patterns, the authorization policy and
the session secret: the rules themselves, without a server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dqrxfer.server.auth.hooks import authorizing
from dqrxfer.server.auth.rules import AuthorizationError, Policy, compile_pattern
from dqrxfer.server.auth.sessions import SecretFileError, SessionSigner, load_or_create_secret
from dqrxfer.server.auth.settings import (
    AuthConfigError,
    is_loopback_host,
    load_auth_settings,
    with_overrides,
)
from dqrxfer.server.config import ConfigError, load_settings
from dqrxfer.server.tus import HookRejection, TusHooks, UploadInfo

PROJECTS = ["replay", "MDC", "O4", "personal"]
SITES = ["llo", "lho", "virgo", "kagra"]
LLO_ROBOTS = "*/robot/*.ligo-la.caltech.edu@LIGO.ORG"


def load(table: dict, tmp_path: Path):
    return load_auth_settings(table, tmp_path, PROJECTS, SITES)


@pytest.mark.parametrize(
    ("pattern", "principal", "matches"),
    [
        ("*@LIGO.ORG", "albert.einstein@LIGO.ORG", True),
        ("*@LIGO.ORG", "albert.einstein@ligo.org", True),  # realms compare case-insensitively
        ("*@LIGO.ORG", "dqr/robot/ldas.ligo-la.caltech.edu@LIGO.ORG", False),
        ("*@LIGO.ORG", "albert.einstein@EXAMPLE.ORG", False),
        ("*@LIGO.ORG", "Albert.Einstein@LIGO.ORG", True),
        ("albert.einstein@LIGO.ORG", "Albert.Einstein@LIGO.ORG", False),  # names are exact
        (
            "*/robot/*.ligo-la.caltech.edu@LIGO.ORG",
            "dqr/robot/ldas.ligo-la.caltech.edu@LIGO.ORG",
            True,
        ),
        (
            "*/robot/*.ligo-la.caltech.edu@LIGO.ORG",
            "dqr/robot/ldas.ligo-wa.caltech.edu@LIGO.ORG",
            False,
        ),
        (
            "*/robot/*.ligo-la.caltech.edu@LIGO.ORG",
            "dqr/robot/a/b.ligo-la.caltech.edu@LIGO.ORG",
            False,
        ),
        ("dqr/robot/host?@LIGO.ORG", "dqr/robot/host1@LIGO.ORG", True),
        ("a.b@LIGO.ORG", "axb@LIGO.ORG", False),  # dots are literal
    ],
)
def test_patterns(pattern: str, principal: str, matches: bool) -> None:
    assert compile_pattern(pattern).matches(principal) is matches


@pytest.mark.parametrize("pattern", ["albert.einstein", "*", "@LIGO.ORG", "a b@LIGO.ORG"])
def test_patterns_must_name_a_realm(pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_pattern(pattern)


def test_policy_messages_name_the_rule(tmp_path: Path) -> None:
    settings = load(
        {
            "mode": "gssapi",
            "rules": [
                {"name": "people", "principals": ["*@LIGO.ORG"], "projects": ["personal"]},
                {
                    "name": "llo robot",
                    "principals": ["dqr/robot/*.ligo-la.caltech.edu@LIGO.ORG"],
                    "projects": ["o4", "MDC"],
                    "sites": ["LLO"],
                },
            ],
        },
        tmp_path,
    )
    policy = Policy(settings.rules)
    robot = "dqr/robot/ldas.ligo-la.caltech.edu@LIGO.ORG"
    assert policy.authorize(robot, "O4", "llo").name == "llo robot"
    assert policy.authorize("albert.einstein@LIGO.ORG", "personal", "kagra").name == "people"
    with pytest.raises(AuthorizationError, match="as site lho: rule 'llo robot' allows only llo"):
        policy.authorize(robot, "O4", "lho")
    with pytest.raises(AuthorizationError, match="may not upload to project O4: no rule"):
        policy.authorize("albert.einstein@LIGO.ORG", "O4", "llo")
    with pytest.raises(AuthorizationError, match="uploads need an authenticated principal"):
        policy.authorize(None, "O4", "llo")
    with pytest.raises(AuthorizationError, match="no auth.rules, so nobody may"):
        Policy(()).authorize(robot, "O4", "llo")


class _Recording(TusHooks):
    """Application hooks that record what reaches them."""

    publishes_finished_uploads = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pre_create(self, info: UploadInfo) -> None:
        self.calls.append("pre_create")

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        self.calls.append("post_finish")
        return {"X-Done": info.id}

    def post_expire(self, info: UploadInfo) -> None:
        self.calls.append("post_expire")


def test_authorizing_hooks_are_tus_hooks_in_front_of_the_application(tmp_path: Path) -> None:
    app_hooks = _Recording()
    assert authorizing(app_hooks, load({}, tmp_path), ["O4"], ["llo"]) is app_hooks  # mode none
    settings = load(
        {"mode": "gssapi", "rules": [{"name": "people", "principals": ["*@LIGO.ORG"]}]}, tmp_path
    )
    hooks = authorizing(app_hooks, settings, ["O4"], ["llo"])
    assert isinstance(hooks, TusHooks) and hooks.publishes_finished_uploads
    metadata = {"project": "O4", "uploader": "llo"}
    hooks.pre_create(UploadInfo(id="a", length=1, owner="ann@LIGO.ORG", metadata=metadata))
    with pytest.raises(HookRejection, match="may not upload") as refused:
        hooks.pre_create(UploadInfo(id="b", length=1, owner="eve@EVIL.ORG", metadata=metadata))
    assert refused.value.status == 403
    assert hooks.post_finish(UploadInfo(id="a", length=1)) == {"X-Done": "a"}
    hooks.post_expire(UploadInfo(id="a", length=1))
    assert app_hooks.calls == ["pre_create", "post_finish", "post_expire"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "kerberos"}, "auth.mode: must be one of none, gssapi, remote-user"),
        ({"colour": "blue"}, "auth.colour: unknown key"),
        ({"rules": {"principals": []}}, "auth.rules: must be an array of tables"),
        ({"rules": [{"projects": ["O4"]}]}, "auth.rules[0].principals: is required"),
        ({"rules": [{"principals": ["x"]}]}, "auth.rules[0].principals: 'x': name a realm"),
        (
            {"rules": [{"principals": ["*@LIGO.ORG"], "sites": ["cit"]}]},
            "auth.rules[0].sites: 'cit' is not configured",
        ),
        (
            {"rules": [{"principals": ["*@LIGO.ORG"], "projects": ["O5"]}]},
            "auth.rules[0].projects: 'O5' is not configured",
        ),
        ({"rules": [{"principals": ["*@L"], "sites": ["*", "llo"]}]}, '"*" stands alone'),
        ({"rules": [{"principals": ["*@L"], "who": 1}]}, "auth.rules[0].who: unknown key"),
        (
            {"session_lifetime": -1},
            "auth.session_lifetime: must be a whole number of seconds from 0 to 86400 (got -1)",
        ),
        ({"session_lifetime": True}, "auth.session_lifetime: must be a whole number of seconds"),
        (
            {"session_secret": "short"},
            "session_secret: must be a string of at least 32 characters (got a string of 5 ",
        ),
        (
            {"trusted_proxies": ["10.0.0.0/8", "proxy"]},
            "auth.trusted_proxies[1]: must be an IP address or network (e.g. 127.0.0.1",
        ),
        ({"cookie_secure": "yes"}, 'auth.cookie_secure: must be true, false or "auto"'),
    ],
)
def test_config_errors_name_the_key(table: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load(table, tmp_path)
    assert message in str(error.value)


def test_config_file_errors_are_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[auth]\nmode = "gssapi"\nsession_lifetime = "long"\n')
    with pytest.raises(ConfigError, match="auth.session_lifetime: must be a whole number"):
        load_settings(config, tmp_path)


def test_serve_options_override_and_are_checked(tmp_path: Path) -> None:
    base = load({"mode": "gssapi"}, tmp_path)
    keytab = tmp_path / "http.keytab"
    with pytest.raises(AuthConfigError, match="http.keytab is not a readable file"):
        with_overrides(base, keytab=str(keytab))
    keytab.write_bytes(b"\x05\x02")
    assert with_overrides(base, keytab=str(keytab)).keytab == keytab
    with pytest.raises(AuthConfigError, match="remote-user mode needs the proxy addresses"):
        with_overrides(base, mode="remote-user")
    proxied = with_overrides(base, mode="remote-user", trusted_proxies=["127.0.0.2", "10.1.0.0/16"])
    assert [str(net) for net in proxied.trusted_proxies] == ["127.0.0.2/32", "10.1.0.0/16"]
    with pytest.raises(AuthConfigError, match="--auth: must be one of"):
        with_overrides(base, mode="kerberos")


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(None, tmp_path)
    assert settings.auth.mode == "none" and settings.auth_mode == "none"
    assert settings.auth.session_secret_file == tmp_path.resolve() / "session.key"
    assert settings.auth.cookie_secure is None and settings.auth.public_read


def test_secret_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "session.key"
    secret = load_or_create_secret(path)
    assert len(secret) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == secret
    assert [p.name for p in path.parent.iterdir()] == ["session.key"]  # no temp files left
    os.chmod(path, 0o644)
    with pytest.raises(SecretFileError, match="readable by others; chmod 600"):
        load_or_create_secret(path)


def test_session_cookies_are_signed(tmp_path: Path) -> None:
    signer = SessionSigner("a" * 64, lifetime=600)
    value = signer.issue("albert.einstein@LIGO.ORG")
    assert signer.verify(value) == "albert.einstein@LIGO.ORG"
    assert "albert" not in value or "." in value  # signed, not a bare name
    assert SessionSigner("b" * 64, lifetime=600).verify(value) is None
    assert signer.verify(value[:-2] + ("AA" if not value.endswith("AA") else "BB")) is None
    assert signer.verify("") is None
    assert signer.cookie_max_age == 540
    assert SessionSigner("a" * 64, lifetime=30).cookie_max_age == 27


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
