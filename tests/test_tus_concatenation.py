"""The concatenation and concatenation-unfinished extensions against the app
in process (support.inprocess; no socket is part of these rules): partial
uploads carry the report metadata of their final upload (checked when they are
created), and the final upload, made of partial uploads created with its
metadata, is published as the partials' bytes in order.  A
final upload of one partial upload is a hard link to the partial's data, not a
copy."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dqrxfer.server.tus import store as store_module
from dqrxfer.server.tus.store import FileStore, UploadInfo
from support.inprocess import InProcessServer, in_process_server
from support.tus import (
    TUS,
    create,
    data_file,
    encode_metadata,
    head,
    new_upload,
    patch,
    published,
    record,
    report_metadata,
    sha256_hex,
    upload_files,
    upload_id,
    write_config,
)
from support.tus import (
    create_final as final,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    root = tmp_path_factory.mktemp("tus-concat")
    data = root / "data"
    data.mkdir()
    with in_process_server(data, write_config(root / "config.toml", upload_expiry=3600)) as app:
        yield app


def partial(server: InProcessServer, length: int | None, metadata: dict[str, str]) -> str:
    """A partial upload for the final upload of ``metadata``."""
    return new_upload(server, length, metadata=metadata, headers={"Upload-Concat": "partial"})


def test_final_upload_of_finished_partials_is_their_concatenation(server: InProcessServer) -> None:
    pieces = [os.urandom(70_000), os.urandom(1), os.urandom(123_456)]
    metadata = report_metadata()
    urls = []
    for piece in pieces:
        url = partial(server, len(piece), metadata)
        info = head(url)
        assert info.headers["Upload-Concat"] == "partial"
        assert "Upload-Expires" in info.headers
        assert patch(url, 0, piece).status_code == 204
        assert record(server, url) == {}  # partial uploads are not reports
        urls.append(url)

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


def test_final_upload_before_its_partials_finish(server: InProcessServer) -> None:
    first, second = os.urandom(50_000), os.urandom(60_000)
    metadata = report_metadata()
    url_a = partial(server, len(first), metadata)
    url_b = partial(server, None, metadata)  # length not known yet either
    assert patch(url_a, 0, first[:10_000]).status_code == 204

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


def test_partial_upload_urls_may_be_relative(server: InProcessServer) -> None:
    metadata = report_metadata()
    url = partial(server, 3, metadata)
    assert patch(url, 0, b"abc").status_code == 204
    response = final(server, [f"/files/{upload_id(url)}"], metadata)
    assert response.status_code == 201
    assert published(server, metadata).read_bytes() == b"abc"


def links_naming(server: InProcessServer, url: str) -> list[str]:
    """The store's concatenation links (``links/<partial>/<final>``) that name ``url``."""
    links = server.data_dir / "uploads" / "links"
    return sorted(str(path.relative_to(links)) for path in links.glob(f"*/{upload_id(url)}"))


def test_a_terminated_final_upload_leaves_no_link_behind(server: InProcessServer) -> None:
    """Found by the request-sequence state machine (test_tus_store_stateful):
    the links of a final upload waiting for its partial uploads stayed after
    it was terminated."""
    metadata = report_metadata()
    waited_for = partial(server, 3, metadata)
    response = final(server, [waited_for], metadata)
    assert response.status_code == 201, response.text
    url = response.headers["Location"]
    assert links_naming(server, url) == [f"{upload_id(waited_for)}/{upload_id(url)}"]

    assert requests.delete(url, headers=TUS, timeout=10).status_code == 204
    assert links_naming(server, url) == []
    assert patch(waited_for, 0, b"abc").status_code == 204  # nothing to complete
    assert head(url).status_code == 404


def test_a_final_upload_of_empty_partial_uploads_leaves_no_link_behind(
    server: InProcessServer,
) -> None:
    """Found by the state machine too: such a final upload is complete at
    once, without a concatenation, and its links stayed."""
    metadata = report_metadata()
    empty = partial(server, 0, metadata)
    response = final(server, [empty, empty], metadata)
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == "0"
    assert links_naming(server, response.headers["Location"]) == []
    assert published(server, metadata).read_bytes() == b""


def test_refused_final_uploads(server: InProcessServer) -> None:
    url = partial(server, 3, report_metadata())
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
    # The final upload is validated as a report.
    response = final(server, [url], report_metadata(graceid="nonsense"))
    assert response.status_code == 400 and response.text.startswith("graceid:")


def test_a_partial_upload_is_checked_at_creation_like_a_whole_upload(
    server: InProcessServer,
) -> None:
    """A partial upload names the report its final upload is for: without it,
    or with a bad one, it is refused before any byte is sent and nothing is
    stored; a good one is not recorded as a report upload."""
    before = upload_files(server)
    for metadata, field in (
        ({}, "project: is required"),
        (report_metadata(graceid="nonsense"), "graceid:"),
        (report_metadata(project="O5"), "project:"),
        (report_metadata(uploader="L1"), "uploader:"),
    ):
        response = create(server, 10, metadata=metadata, headers={"Upload-Concat": "partial"})
        assert response.status_code == 400, response.text
        assert response.text.startswith(field)
        whole = create(server, 10, metadata=metadata)
        if metadata:  # the words of a whole upload's refusal, no protocol words
            assert response.text == whole.text, response.text
        else:  # none at all: told why a partial upload needs it
            explained = whole.text.strip() + " (a partial upload, Upload-Concat: partial"
            assert response.text.startswith(explained), response.text
        assert "Location" not in response.headers
    assert upload_files(server) == before

    metadata = report_metadata()
    url = partial(server, 3, metadata)
    assert patch(url, 0, b"abc").status_code == 204
    assert record(server, url) == {}  # not a report upload
    response = final(server, [url], {**metadata, "sha256": sha256_hex(b"abc")})
    assert response.status_code == 201, response.text
    assert published(server, metadata).read_bytes() == b"abc"
    assert record(server, response.headers["Location"])["state"] == "published"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"filename": "other.bin"}, "filename 'file"),
        ({"graceid": "S230518i"}, "graceid 'S230518h' (not 'S230518i')"),
        ({"revision": "2"}, "revision '1' (not '2')"),
        ({"subdir": "plots"}, "subdir '' (not 'plots')"),
        ({"uploader": "lho"}, "uploader 'llo' (not 'lho')"),
    ],
)
def test_a_final_upload_joins_only_partial_uploads_created_for_it(
    server: InProcessServer, changes: dict[str, str], named: str
) -> None:
    """A partial upload was checked for the report its metadata names: a final
    upload for another one may not use it (400 naming the field and the rule),
    and nothing is created."""
    metadata = report_metadata()
    url = partial(server, 3, metadata)
    assert patch(url, 0, b"abc").status_code == 204
    before = upload_files(server)
    response = final(server, [url], {**metadata, **changes})
    assert response.status_code == 400, response.text
    assert response.text.startswith(f"Upload-Concat: partial upload {upload_id(url)} was created")
    assert named in response.text
    assert "a final upload joins only partial uploads created with its report metadata" in (
        response.text
    )
    assert upload_files(server) == before
    # The final upload it was created for may still use it.
    assert final(server, [url], metadata).status_code == 201


# -- a final upload of one partial upload: a hard link -----------------------------


def test_a_final_upload_of_one_partial_upload_links_its_data_instead_of_copying(
    server: InProcessServer,
) -> None:
    payload = os.urandom(300_001)
    metadata = report_metadata()
    url = partial(server, len(payload), metadata)
    assert patch(url, 0, payload[:100_000]).status_code == 204
    assert patch(url, 100_000, payload[100_000:]).status_code == 204
    response = final(server, [url], metadata)
    assert response.status_code == 201, response.text
    final_url = response.headers["Location"]
    assert response.headers["Upload-Offset"] == str(len(payload))

    partial_data, final_data = data_file(server, url), data_file(server, final_url)
    report_file = published(server, metadata)
    # One inode, three names: the partial's data, the final's, the published file.
    assert partial_data.stat().st_ino == final_data.stat().st_ino == report_file.stat().st_ino
    assert final_data.stat().st_nlink == 3
    assert final_data.read_bytes() == payload == report_file.read_bytes()
    info = head(final_url)
    assert info.headers["Upload-Offset"] == info.headers["Upload-Length"] == str(len(payload))
    assert info.headers["Upload-Concat"] == f"final;{url}"
    assert head(url).headers["Upload-Offset"] == str(len(payload))
    assert record(server, final_url)["state"] == "published"
    assert not [p for p in final_data.parent.iterdir() if p.name.endswith(".tmp")]

    # The partial upload can be terminated; the final one and the report keep the bytes.
    response = requests.delete(url, headers=TUS, timeout=10)
    assert response.status_code == 204
    assert head(url).status_code == 404
    assert not partial_data.exists()
    assert final_data.stat().st_nlink == 2
    assert final_data.read_bytes() == payload == report_file.read_bytes()
    info = head(final_url)
    assert info.status_code == 200
    assert info.headers["Upload-Offset"] == info.headers["Upload-Length"] == str(len(payload))
    assert record(server, final_url)["state"] == "published"


def _finished_partial(store: FileStore, payload: bytes) -> UploadInfo:
    info = store.create(UploadInfo(id="", length=len(payload), concat="partial"))
    chunks = [payload]

    def read(size: int) -> bytes:
        return chunks.pop() if chunks else b""

    store.write(info.id, 0, read, len(payload))
    store.make_durable(info.id)
    store.mark_completed(info)
    return store.get(info.id)


def _concatenate(store: FileStore, partials: list[UploadInfo]) -> UploadInfo:
    length = sum(partial.offset for partial in partials)
    final_info = store.create(
        UploadInfo(
            id="", length=length, concat="final", partials=[partial.id for partial in partials]
        )
    )
    store.concatenate(final_info, partials)
    return store.get(final_info.id)


@pytest.mark.parametrize("policy", ["complete", "always", "never"])
def test_the_linked_final_upload_is_fsynced_before_its_rename_as_the_policy_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    store = FileStore(tmp_path / "uploads", fsync=policy)
    payload = os.urandom(70_000)
    partial_info = _finished_partial(store, payload)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1])
        real_fsync(fd)

    def recording_replace(source: object, target: object) -> None:
        events.append("rename " + str(source).rsplit("/", 1)[-1])
        real_replace(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module.os, "fsync", recording_fsync)
    monkeypatch.setattr(store_module.os, "replace", recording_replace)
    final_info = _concatenate(store, [partial_info])
    assert final_info.offset == len(payload) and final_info.finished
    final_data, partial_data = store.data_path(final_info.id), store.data_path(partial_info.id)
    assert final_data.stat().st_ino == partial_data.stat().st_ino
    assert final_data.read_bytes() == payload
    renamed = [event for event in events if event.startswith("rename ")]
    assert len(renamed) == 1 and renamed[0].endswith(".tmp")
    temporary = renamed[0].removeprefix("rename ")
    if policy == "never":
        assert events == renamed
    else:
        assert events.index(f"fsync {temporary}") < events.index(renamed[0])
        assert events[-1] == "fsync uploads"  # the directory, after the rename


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EPERM])
def test_a_filesystem_without_hard_links_gets_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Where link(2) is refused (another device, a filesystem without hard
    links), the single partial upload is copied like several are."""
    store = FileStore(tmp_path / "uploads")
    payload = os.urandom(123_457)
    partial_info = _finished_partial(store, payload)

    def refuse(source: object, target: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store_module.os, "link", refuse)
    final_info = _concatenate(store, [partial_info])
    final_data, partial_data = store.data_path(final_info.id), store.data_path(partial_info.id)
    assert final_data.read_bytes() == payload
    assert final_data.stat().st_ino != partial_data.stat().st_ino
    assert final_data.stat().st_nlink == partial_data.stat().st_nlink == 1
    assert not [p for p in final_data.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_final_upload_of_several_partial_uploads_is_still_a_copy(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "uploads")
    pieces = [os.urandom(1000), os.urandom(2000)]
    partials = [_finished_partial(store, piece) for piece in pieces]
    final_info = _concatenate(store, partials)
    final_data = store.data_path(final_info.id)
    assert final_data.read_bytes() == b"".join(pieces)
    assert final_data.stat().st_nlink == 1
