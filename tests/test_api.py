"""The JSON links API: fields, filters, paging, errors, caching validators
(ETag / Last-Modified / 304) and CORS, against the app in process
(support.inprocess); dropped PostgreSQL connections under a live server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from support.inprocess import InProcessServer, in_process_server
from support.live import LiveServer
from support.seed import BASE_TIME, Seed, seed
from support.tus import Served

ALLOWED_ORIGIN = "http://pages.example:8000"

SEEDS = [
    Seed("S230518h", "llo", 1, minutes=0, file_count=3, total_bytes=300),
    Seed("S230518h", "lho", 1, minutes=5),
    Seed("S230518h", "virgo", 1, minutes=7),
    Seed("S230518h", "llo", 2, minutes=10, file_count=4, total_bytes=4096),
    Seed("S230520ab", "kagra", 0, project="replay", minutes=20),
    *[Seed(f"G{10000 + i}", "llo", 1, project="MDC", minutes=30 + i) for i in range(30)],
]


def write_config(path: Path, data_dir: Path, origins: list[str]) -> Path:
    quoted = ", ".join(f'"{origin}"' for origin in origins)
    path.write_text(
        f'data_dir = "{data_dir}"\nauto_upgrade = true\nserve_reports = true\n'
        f"cors_origins = [{quoted}]\n"
    )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    root = tmp_path_factory.mktemp("api")
    data_dir = root / "data"
    data_dir.mkdir()
    config = write_config(root / "server.toml", data_dir, [ALLOWED_ORIGIN])
    with in_process_server(data_dir, config) as app:
        seed(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}", SEEDS)
        yield app


def get(server: Served, path: str, **kwargs: object) -> requests.Response:
    return requests.get(f"{server.url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]


def summary(reports: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["site"], r["revision"]) for r in reports]


def test_event_reports_have_every_field(server: InProcessServer) -> None:
    response = get(server, "/api/v1/events/S230518h/reports")
    assert response.status_code == 200
    body = response.json()
    assert body["graceid"] == "S230518h"
    assert summary(body["reports"]) == [("lho", 1), ("llo", 1), ("llo", 2), ("virgo", 1)]
    llo2 = body["reports"][2]
    assert llo2 == {
        "graceid": "S230518h",
        "site": "llo",
        "revision": 2,
        "project": "O4",
        "url": f"{server.url}/reports/O4/S230518h_dir/S230518h_llo_2/",
        "created": "2023-05-18T12:09:30Z",
        "updated": "2023-05-18T12:10:00Z",
        "file_count": 4,
        "bytes": 4096,
    }


def test_latest_keeps_the_newest_revision_per_site(server: InProcessServer) -> None:
    body = get(server, "/api/v1/events/S230518h/reports?latest=1").json()
    assert summary(body["reports"]) == [("lho", 1), ("llo", 2), ("virgo", 1)]
    body = get(server, "/api/v1/events/S230518h/reports?latest=0").json()
    assert len(body["reports"]) == 4


MIXED = [
    Seed("S230601a", "llo", 1, project="O4", minutes=0),
    Seed("S230601a", "llo", 1, project="personal", minutes=2),
    Seed("S230601a", "llo", 2, project="personal", minutes=4),
    Seed("S230601a", "lho", 3, project="MDC", minutes=6),
]


def test_project_filter_and_latest_per_project(tmp_path: Path) -> None:
    """Two projects' "LLO revision 1" stay apart: ``project=`` keeps one,
    ``latest`` keeps the newest revision of each site in each project."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with in_process_server(data_dir) as mixed:
        seed(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}", MIXED)
        path = "/api/v1/events/S230601a/reports"

        def shown(**params: str) -> list[tuple[object, ...]]:
            response = get(mixed, path, params=params)
            assert response.status_code == 200, response.text
            return [(r["site"], r["revision"], r["project"]) for r in response.json()["reports"]]

        assert shown() == [
            ("lho", 3, "MDC"),
            ("llo", 1, "O4"),
            ("llo", 1, "personal"),
            ("llo", 2, "personal"),
        ]
        assert shown(project="personal") == [("llo", 1, "personal"), ("llo", 2, "personal")]
        assert shown(project="o4") == [("llo", 1, "O4")]  # the configured spelling back
        assert shown(project="replay") == []
        assert shown(latest="1") == [("lho", 3, "MDC"), ("llo", 1, "O4"), ("llo", 2, "personal")]
        assert shown(latest="1", project="personal", site="llo") == [("llo", 2, "personal")]
        bad = get(mixed, path, params={"project": "O5"})
        assert bad.status_code == 400
        assert bad.json() == {
            "error": "project: must be one of MDC, O4, personal, replay (got 'O5')",
            "parameter": "project",
        }


def test_site_filter_accepts_legacy_spellings(server: InProcessServer) -> None:
    for site, expected in (("llo", [("llo", 1), ("llo", 2)]), ("EGO", [("virgo", 1)])):
        body = get(server, "/api/v1/events/S230518h/reports", params={"site": site}).json()
        assert summary(body["reports"]) == expected
    body = get(server, "/api/v1/events/S230518h/reports?site=LLO&latest=true").json()
    assert summary(body["reports"]) == [("llo", 2)]


def test_unknown_event_is_an_empty_list(server: InProcessServer) -> None:
    response = get(server, "/api/v1/events/GW230518A/reports")
    assert response.status_code == 200
    assert response.json() == {"graceid": "GW230518A", "reports": []}
    assert "Last-Modified" not in response.headers


@pytest.mark.parametrize(
    ("path", "parameter", "message"),
    [
        ("/api/v1/events/S2305/reports", "graceid", "graceid: must be a superevent"),
        ("/api/v1/events/S230518h/reports?site=geo", "site", "site: must be one of kagra, lho"),
        ("/api/v1/events/S230518h/reports?latest=maybe", "latest", "latest: must be 1 or 0"),
        ("/api/v1/events/S230518h/reports?files=maybe", "files", "files: must be 1 or 0"),
        ("/api/v1/reports?site=x", "site", "site: must be one of"),
        ("/api/v1/reports?project=O5", "project", "project: must be one of MDC, O4"),
        ("/api/v1/reports?since=yesterday", "since", "since: must be an ISO 8601 date"),
        ("/api/v1/reports?until=2023-13-01", "until", "until: must be an ISO 8601 date"),
        ("/api/v1/reports?since=0001-01-01T00:00:00%2B05:00", "since", "since: is out of range"),
        ("/api/v1/reports?limit=0", "limit", "limit: must be an integer from 1 to 500"),
        ("/api/v1/reports?limit=501", "limit", "limit: must be an integer from 1 to 500"),
        ("/api/v1/reports?limit=%D9%A1", "limit", "limit: must be an integer"),
        ("/api/v1/reports?cursor=nonsense", "cursor", "cursor: is not a cursor given by"),
        ("/api/v1/events?cursor=-1", "cursor", "cursor: is not a cursor given by"),
        ("/api/v1/events?limit=ten", "limit", "limit: must be an integer"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    server: InProcessServer, path: str, parameter: str, message: str
) -> None:
    response = get(server, path)
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["parameter"] == parameter
    assert body["error"].startswith(message), body


def test_unknown_paths_and_methods_are_json_errors(server: InProcessServer) -> None:
    response = get(server, "/api/v1/nothing/here")
    assert response.status_code == 404
    assert response.json() == {"error": "not found: /api/v1/nothing/here"}
    response = requests.post(f"{server.url}/api/v1/events/S230518h/reports", timeout=10)
    assert response.status_code == 405
    assert response.json()["error"] == "method POST not allowed on /api/v1/events/S230518h/reports"
    assert "GET" in response.headers["Allow"]
    response = get(server, "/api/v1/uploads/unknown")
    assert response.status_code == 404 and response.json()["error"] == "upload: no such upload"


def test_reports_are_newest_first_and_filtered(server: InProcessServer) -> None:
    body = get(server, "/api/v1/reports", params={"limit": "3"}).json()
    assert [r["graceid"] for r in body["reports"]] == ["G10029", "G10028", "G10027"]
    body = get(server, "/api/v1/reports", params={"project": "o4"}).json()
    assert summary(body["reports"]) == [("llo", 2), ("virgo", 1), ("lho", 1), ("llo", 1)]
    assert body["next"] is None
    body = get(server, "/api/v1/reports", params={"site": "kagra"}).json()
    assert [(r["graceid"], r["project"]) for r in body["reports"]] == [("S230520ab", "replay")]
    since = (BASE_TIME + timedelta(minutes=5)).isoformat()
    until = (BASE_TIME + timedelta(minutes=20)).isoformat()
    body = get(server, "/api/v1/reports", params={"since": since, "until": until}).json()
    assert summary(body["reports"]) == [("llo", 2), ("virgo", 1), ("lho", 1)]
    # A date without a time is midnight UTC; a time without a zone is UTC.
    body = get(server, "/api/v1/reports", params={"until": "2023-05-18T12:05"}).json()
    assert summary(body["reports"]) == [("llo", 1)]
    body = get(server, "/api/v1/reports", params={"since": "2023-05-19"}).json()
    assert body["reports"] == []


def test_paging_visits_every_report_once_in_order(server: InProcessServer) -> None:
    url: str | None = f"{server.url}/api/v1/reports?limit=7&project=MDC&_=123"
    seen: list[str] = []
    pages = 0
    while url is not None:
        body = requests.get(url, timeout=10).json()
        seen += [r["graceid"] for r in body["reports"]]
        url = body["next"]
        pages += 1
        assert url is None or ("project=MDC" in url and "_=" not in url)
    assert pages == 5
    assert seen == [f"G{10000 + i}" for i in reversed(range(30))]


def test_events_are_newest_first_with_their_sites(server: InProcessServer) -> None:
    body = get(server, "/api/v1/events", params={"limit": "31"}).json()
    events = body["events"]
    assert [e["graceid"] for e in events[:2]] == ["G10029", "G10028"]
    assert len(events) == 31 and events[-1]["graceid"] == "S230520ab"
    tail = requests.get(body["next"], timeout=10).json()
    assert [e["graceid"] for e in tail["events"]] == ["S230518h"] and tail["next"] is None
    event = tail["events"][0]
    assert event == {
        "graceid": "S230518h",
        "created": "2023-05-18T12:00:00Z",
        "updated": "2023-05-18T12:10:00Z",
        "report_count": 4,
        "sites": ["lho", "llo", "virgo"],
        "reports_url": f"{server.url}/api/v1/events/S230518h/reports",
    }


def test_etag_and_last_modified_give_304(server: InProcessServer) -> None:
    path = "/api/v1/events/S230518h/reports"
    first = get(server, path)
    assert first.headers["Cache-Control"] == "no-cache"
    etag = first.headers["ETag"]
    assert first.headers["Last-Modified"] == "Thu, 18 May 2023 12:10:00 GMT"
    again = get(server, path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    dated = get(server, path, headers={"If-Modified-Since": first.headers["Last-Modified"]})
    assert dated.status_code == 304
    # Another representation (a filter) is another ETag.
    other = get(server, path + "?latest=1", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["ETag"] != etag
    stale = get(server, path, headers={"If-None-Match": '"not-it"'})
    assert stale.status_code == 200 and stale.json()["reports"]


def test_new_report_changes_the_etag(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with in_process_server(data_dir) as server:
        path = "/api/v1/events/S230601a/reports"
        empty = get(server, path)
        assert empty.json()["reports"] == []
        seed(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}", [Seed("S230601a", "lho", 3)])
        fresh = get(server, path, headers={"If-None-Match": empty.headers["ETag"]})
        assert fresh.status_code == 200
        assert summary(fresh.json()["reports"]) == [("lho", 3)]
        assert fresh.headers["ETag"] != empty.headers["ETag"]


def test_ping_is_never_cached_and_timing_is_reported(server: InProcessServer) -> None:
    response = get(server, "/api/v1/ping")
    assert response.headers["Cache-Control"] == "no-store" and "ETag" not in response.headers
    app, cpu = response.headers["Server-Timing"].split(", ")
    assert app.startswith("app;dur=") and cpu.startswith("cpu;dur=")
    assert 0 <= float(cpu.split("=")[1]) <= float(app.split("=")[1]) + 0.05


def test_cors_for_configured_origins_only_outside_public_reads(server: InProcessServer) -> None:
    allowed = get(server, "/api/v1/ping", headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    for origin in ("http://elsewhere.example", "null"):
        other = get(server, "/api/v1/ping", headers={"Origin": origin})
        assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "http://elsewhere.example", "null"])
def test_public_reads_answer_every_origin_without_credentials(
    server: InProcessServer, origin: str
) -> None:
    """``null`` is a sandboxed report page (served from /reports/): no list of
    origins can name it, and a public read is the same for everyone."""
    path = "/api/v1/events/S230518h/reports"
    for read in (path, "/api/v1/reports", "/api/v1/events", "/api/v1/openapi.json"):
        answer = get(server, read, headers={"Origin": origin})
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "*", read
        assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "ETag" in answer.headers["Access-Control-Expose-Headers"]

    preflight = requests.options(
        f"{server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            # jQuery adds X-Requested-With to requests it thinks same-origin.
            "Access-Control-Request-Headers": "if-none-match, x-requested-with, x-evil",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    assert preflight.headers["Access-Control-Allow-Headers"] == "if-none-match, x-requested-with"
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    # Errors are readable cross-origin too, so a page can show the message.
    error = get(server, "/api/v1/events/bad/reports", headers={"Origin": origin})
    assert error.status_code == 400
    assert error.headers["Access-Control-Allow-Origin"] == "*"


def test_no_cors_by_default(app_server: InProcessServer) -> None:
    response = get(app_server, "/api/v1/ping", headers={"Origin": ALLOWED_ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_bad_cors_origin_in_config_is_refused(tmp_path: Path) -> None:
    from support.cli import run_cli

    config = write_config(tmp_path / "server.toml", tmp_path / "data", ["pages.example/path"])
    result = run_cli("dqrxfer-server", "db", "current", "--config", str(config))
    assert result.returncode == 2
    assert "cors_origins[0]: must be an origin such as https://host.example:8443" in result.stderr
    assert "(got 'pages.example/path')" in result.stderr


@pytest.mark.postgres
def test_lookup_on_postgresql_survives_dropped_connections(
    postgres_url: str, tmp_path: Path
) -> None:
    """The links lookup keeps its own pool (autocommit, no ping before each use):
    when the database drops its connections, the next lookup still answers."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"links-test-{uuid.uuid4().hex[:10]}"
    url = f"{postgres_url}&application_name={name}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{data_dir}"\nauto_upgrade = true\ndatabase_url = "{url}"\n')
    server = LiveServer(data_dir, config=config, workers=1).start()
    try:
        seed(url, [Seed("S230518h", "llo", 1), Seed("S230518h", "lho", 2)])
        path = "/api/v1/events/S230518h/reports"
        expected = [("lho", 2), ("llo", 1)]
        # Several at once, so the pool holds more than one connection.
        for _ in range(3):
            assert summary(get(server, path).json()["reports"]) == expected
        admin = create_engine(postgres_url)
        with admin.begin() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            ).scalar_one()
        admin.dispose()
        assert killed >= 1
        for _ in range(3):
            response = get(server, path)
            assert response.status_code == 200, response.text
            assert summary(response.json()["reports"]) == expected
    finally:
        server.discard()
