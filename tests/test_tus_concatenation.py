"""The concatenation and concatenation-unfinished extensions against a live
server: partial uploads carry no report metadata, the final upload does and is
published as the partials' bytes in order."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests
from support.live import LiveServer
from support.tus import (
    TUS,
    create,
    encode_metadata,
    head,
    new_upload,
    patch,
    published,
    record,
    report_metadata,
    upload_id,
    write_config,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("tus-concat")
    data = root / "data"
    data.mkdir()
    live = LiveServer(data, config=write_config(root / "config.toml", upload_expiry=3600)).start()
    yield live
    live.stop()


def partial(server: LiveServer, length: int | None) -> str:
    return new_upload(server, length, metadata={}, headers={"Upload-Concat": "partial"})


def final(
    server: LiveServer, urls: list[str], metadata: dict[str, str] | None = None
) -> requests.Response:
    return requests.post(
        f"{server.url}/files/",
        headers={
            **TUS,
            "Upload-Concat": "final;" + " ".join(urls),
            "Upload-Metadata": encode_metadata(metadata or report_metadata()),
        },
        timeout=30,
    )


def test_final_upload_of_finished_partials_is_their_concatenation(server: LiveServer) -> None:
    pieces = [os.urandom(70_000), os.urandom(1), os.urandom(123_456)]
    urls = []
    for piece in pieces:
        url = partial(server, len(piece))
        info = head(url)
        assert info.headers["Upload-Concat"] == "partial"
        assert "Upload-Expires" in info.headers
        assert patch(url, 0, piece).status_code == 204
        assert record(server, url) == {}  # partial uploads are not reports
        urls.append(url)

    metadata = report_metadata()
    response = final(server, urls, metadata)
    assert response.status_code == 201, response.text
    url = response.headers["Location"]
    total = sum(len(piece) for piece in pieces)
    assert response.headers["Upload-Offset"] == str(total)
    info = head(url)
    assert info.headers["Upload-Offset"] == info.headers["Upload-Length"] == str(total)
    assert info.headers["Upload-Concat"] == "final;" + " ".join(urls)
    assert "Upload-Expires" not in info.headers
    assert published(server, metadata).read_bytes() == b"".join(pieces)
    assert record(server, url)["state"] == "published"

    response = patch(url, total, b"")
    assert response.status_code == 403
    response = patch(url, 0, b"x")
    assert response.status_code == 403


def test_final_upload_before_its_partials_finish(server: LiveServer) -> None:
    first, second = os.urandom(50_000), os.urandom(60_000)
    url_a = partial(server, len(first))
    url_b = partial(server, None)  # length not known yet either
    assert patch(url_a, 0, first[:10_000]).status_code == 204

    metadata = report_metadata()
    response = final(server, [url_a, url_b], metadata)
    assert response.status_code == 201, response.text
    url = response.headers["Location"]
    assert "Upload-Offset" not in response.headers
    info = head(url)
    assert "Upload-Offset" not in info.headers  # not concatenated yet
    assert info.headers["Upload-Defer-Length"] == "1"
    assert patch(url, 0, b"x").status_code == 403

    assert patch(url_b, 0, second, headers={"Upload-Length": str(len(second))}).status_code == 204
    info = head(url)
    assert info.headers["Upload-Length"] == str(len(first) + len(second))
    assert "Upload-Offset" not in info.headers
    assert not published(server, metadata).exists()

    # The last byte of the last partial upload completes the final upload.
    assert patch(url_a, 10_000, first[10_000:]).status_code == 204
    info = head(url)
    assert info.headers["Upload-Offset"] == info.headers["Upload-Length"] == "110000"
    assert published(server, metadata).read_bytes() == first + second
    assert record(server, url)["state"] == "published"


def test_partial_upload_urls_may_be_relative(server: LiveServer) -> None:
    url = partial(server, 3)
    assert patch(url, 0, b"abc").status_code == 204
    metadata = report_metadata()
    response = final(server, [f"/files/{upload_id(url)}"], metadata)
    assert response.status_code == 201
    assert published(server, metadata).read_bytes() == b"abc"


def test_refused_final_uploads(server: LiveServer) -> None:
    url = partial(server, 3)
    plain = new_upload(server, 3)
    missing = f"{server.url}/files/{'b' * 32}"
    cases = [
        ([missing], "no partial upload"),
        ([plain], "is not a partial upload"),
        ([f"{server.url}/elsewhere/{upload_id(url)}"], "is not an upload URL here"),
        ([], "names at least one partial upload"),
    ]
    for urls, message in cases:
        response = final(server, urls)
        assert response.status_code == 400, urls
        assert response.text.startswith("Upload-Concat:") and message in response.text

    response = requests.post(
        f"{server.url}/files/",
        headers={
            **TUS,
            "Upload-Concat": f"final;{url}",
            "Upload-Length": "3",
            "Upload-Metadata": encode_metadata(report_metadata()),
        },
        timeout=10,
    )
    assert response.status_code == 400 and "sum of its partial uploads" in response.text
    response = create(server, 3, headers={"Upload-Concat": "sideways"})
    assert response.status_code == 400 and response.text.startswith("Upload-Concat:")
    # The final upload is validated as a report; a partial one is not.
    response = final(server, [url], report_metadata(graceid="nonsense"))
    assert response.status_code == 400 and response.text.startswith("graceid:")
