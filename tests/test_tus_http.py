"""The tus endpoint as the web sees it: CORS for browser clients on other
origins, Location URLs behind a trusted reverse proxy, and Prometheus
metrics summed over several gunicorn workers."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from support.live import LiveServer, with_gunicorn_config
from support.tus import (
    TUS,
    create,
    encode_metadata,
    head,
    new_upload,
    patch,
    report_metadata,
    upload_id,
    write_config,
)

ORIGIN = "https://pages.example.org"
WANTED_HEADERS = [
    "tus-resumable",
    "upload-offset",
    "upload-length",
    "upload-metadata",
    "upload-checksum",
    "upload-concat",
    "upload-defer-length",
    "content-type",
    "x-http-method-override",
]
PROXY = "127.0.0.2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("tus-http")
    data = root / "data"
    data.mkdir()
    config = write_config(
        root / "config.toml",
        cors_origins=[ORIGIN, "https://other.example.org"],
        trusted_proxies=[f"{PROXY}/32"],
    )
    metrics_dir = root / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    live = LiveServer(data, config=config, workers=3, env=env).start()
    yield live
    live.discard()


# -- CORS ----------------------------------------------------------------------------


def test_preflight_from_a_configured_origin(server: LiveServer) -> None:
    for path in ("/files/", f"/files/{'c' * 32}"):
        response = requests.options(
            server.url + path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": ",".join(WANTED_HEADERS),
            },
            timeout=10,
        )
        assert response.status_code == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Access-Control-Allow-Credentials" not in response.headers
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"POST", "HEAD", "PATCH", "DELETE"} <= methods
        allowed = {
            h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert allowed == set(WANTED_HEADERS)
        assert "Origin" in response.headers["Vary"]


def test_responses_to_a_configured_origin_expose_the_tus_headers(server: LiveServer) -> None:
    response = create(server, 10, headers={"Origin": ORIGIN})
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Expires",
        "Upload-Metadata",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Tus-Checksum-Algorithm",
    } <= exposed
    url = response.headers["Location"]
    # Errors too, so that a browser client can read why.
    response = requests.head(url, headers={"Origin": ORIGIN}, timeout=10)
    assert response.status_code == 412
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Tus-Version" in response.headers["Access-Control-Expose-Headers"]


def test_other_origins_get_no_cors_headers(server: LiveServer) -> None:
    response = requests.options(
        f"{server.url}/files/",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    response = create(server, 10, headers={"Origin": "https://evil.example.com"})
    assert response.status_code == 201
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Expose-Headers" not in response.headers


# -- Location behind a proxy -----------------------------------------------------------------


def post_from(server: LiveServer, source: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=10, source_address=(source, 0)
    )
    connection.request(
        "POST",
        "/files/",
        headers={
            **TUS,
            "Upload-Length": "3",
            "Upload-Metadata": encode_metadata(report_metadata()),
            **headers,
        },
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


FORWARDED = {
    "X-Forwarded-For": "192.0.2.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "dqr.example.org",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/dqr",
}


def test_forwarded_headers_are_honoured_from_a_trusted_proxy(server: LiveServer) -> None:
    response = post_from(server, PROXY, FORWARDED)
    assert response.status == 201
    location = response.getheader("Location")
    assert location is not None
    assert location.startswith("https://dqr.example.org/dqr/files/")
    # The URL names the upload the proxy passes on (it strips its prefix).
    ident = upload_id(location)
    assert head(f"{server.url}/files/{ident}").status_code == 200
    # A client behind the proxy may use that URL in a concatenation.
    metadata = encode_metadata(report_metadata())
    partial = post_from(
        server, PROXY, {**FORWARDED, "Upload-Concat": "partial", "Upload-Metadata": metadata}
    )
    partial_url = partial.getheader("Location")
    assert partial_url is not None and partial_url.startswith("https://dqr.example.org/dqr/")
    assert patch(f"{server.url}/files/{upload_id(partial_url)}", 0, b"abc").status_code == 204
    response = post_from(
        server,
        PROXY,
        {**FORWARDED, "Upload-Concat": f"final;{partial_url}", "Upload-Length": ""},
    )
    assert response.status == 400  # a final upload may not send Upload-Length
    final = requests.post(
        f"{server.url}/files/",
        headers={
            **TUS,
            "Upload-Concat": f"final;{partial_url}",
            "Upload-Metadata": metadata,
        },
        timeout=10,
    )
    assert final.status_code == 201, final.text


def test_forwarded_headers_from_anyone_else_are_ignored(server: LiveServer) -> None:
    response = post_from(server, "127.0.0.1", FORWARDED)
    assert response.status == 201
    location = response.getheader("Location")
    assert location is not None and location.startswith(f"{server.url}/files/")
    response = post_from(server, "127.0.0.3", FORWARDED)
    location = response.getheader("Location")
    assert location is not None and location.startswith(f"http://127.0.0.1:{server.port}/files/")


# -- metrics -------------------------------------------------------------------------------------


def scrape(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_every_workers_requests_and_bytes(server: LiveServer) -> None:
    before = scrape(server)
    urls = [new_upload(server, 1000) for _ in range(12)]
    for url in urls[:10]:
        assert patch(url, 0, b"x" * 600).status_code == 204
    assert patch(urls[0], 0, b"y").status_code == 409
    for url in urls[10:]:
        assert requests.delete(url, headers=TUS, timeout=10).status_code == 204
    finished_url = new_upload(server, 4)
    assert patch(finished_url, 0, b"done").status_code == 204
    after = scrape(server)

    requests_total = "dqrxfer_tus_requests_total"
    assert delta(after, before, requests_total, method="POST", status="201") == 13
    assert delta(after, before, requests_total, method="PATCH", status="204") == 11
    assert delta(after, before, requests_total, method="PATCH", status="409") == 1
    assert delta(after, before, requests_total, method="DELETE", status="204") == 2
    assert delta(after, before, "dqrxfer_tus_received_bytes_total") == 10 * 600 + 4
    assert delta(after, before, "dqrxfer_tus_uploads_created_total") == 13
    assert delta(after, before, "dqrxfer_tus_uploads_finished_total") == 1
    assert delta(after, before, "dqrxfer_tus_uploads_terminated_total") == 2
    # One lock per PATCH and DELETE (a creation without data takes none).
    assert delta(after, before, "dqrxfer_tus_lock_wait_seconds_count") == 11 + 1 + 2
    assert after[("dqrxfer_tus_uploads_open", ())] == 0
    # Each of the three workers keeps its own values; the scrape adds them up.
    metrics_dir = Path(server.env["PROMETHEUS_MULTIPROC_DIR"])
    assert len(list(metrics_dir.glob("counter_*.db"))) >= 3


def test_a_worker_file_not_sized_yet_does_not_fail_the_scrape(server: LiveServer) -> None:
    # prometheus_client creates a process's file empty and sizes it a moment
    # later; a scrape in between read it as a header and answered 500.
    url = new_upload(server, 3)
    assert patch(url, 0, b"abc").status_code == 204
    metrics_dir = Path(server.env["PROMETHEUS_MULTIPROC_DIR"])
    starting = metrics_dir / "counter_4194303.db"
    starting.touch()
    try:
        values = scrape(server)
    finally:
        starting.unlink()
    assert values[("dqrxfer_tus_received_bytes_total", ())] >= 3


def test_options_and_head_are_counted_too(server: LiveServer) -> None:
    before = scrape(server)
    url = new_upload(server, 5)
    assert head(url).status_code == 200
    assert requests.options(f"{server.url}/files/", timeout=10).status_code == 204
    assert patch(url, 0, b"abc", headers={"Content-Type": "text/plain"}).status_code == 415
    after = scrape(server)
    total = "dqrxfer_tus_requests_total"
    assert delta(after, before, total, method="HEAD", status="200") == 1
    assert delta(after, before, total, method="OPTIONS", status="204") == 1
    assert delta(after, before, total, method="PATCH", status="415") == 1


def test_gunicorn_never_reads_forwarded_headers(tmp_path: Path) -> None:
    """The app is the one reader of X-Forwarded-*: a gunicorn config file that
    trusts every address (``forwarded_allow_ips``) changes nothing."""
    live = with_gunicorn_config(tmp_path, 'forwarded_allow_ips = "*"\n').start()
    try:
        response = post_from(live, "127.0.0.1", FORWARDED)
        assert response.status == 201
        location = response.getheader("Location")
        assert location is not None and location.startswith(f"{live.url}/files/")
    finally:
        live.stop()
