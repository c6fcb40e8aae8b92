"""Tar archives built by the tests, honest and hostile, in memory.

Every hostile archive is made with :mod:`tarfile` (or by hand where tarfile
refuses to write the trick), so the corpus is reproducible and needs no
fixture files.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One member: ``kind`` is file, dir, symlink, hardlink, chr, blk or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def file(name: str, data: bytes | str = b"x", mode: int = 0o644) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode=mode)


def directory(name: str) -> Entry:
    return Entry(name, "dir", mode=0o755)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", target=target)


def special(name: str, kind: str) -> Entry:
    return Entry(name, kind)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def build(entries: Iterable[Entry], compression: str = "", fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive of ``entries``; ``compression`` is '', 'gz', 'bz2' or 'xz'."""
    buffer = io.BytesIO()
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(fileobj=buffer, mode=mode, format=fmt) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = _TYPES[entry.kind]
            info.mode = entry.mode
            info.mtime = 1_700_000_000
            if entry.kind == "file":
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
            else:
                if entry.kind in ("symlink", "hardlink"):
                    info.linkname = entry.target
                if entry.kind in ("chr", "blk"):
                    info.devmajor, info.devminor = 1, 3
                archive.addfile(info)
    return buffer.getvalue()


def report_tree(files: dict[str, bytes | str], compression: str = "") -> bytes:
    """An honest report archive: ``./`` first, then directories and files, as GNU tar writes."""
    entries: list[Entry] = [directory(".")]
    seen: set[str] = set()
    for name in sorted(files):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in seen:
                seen.add(parent)
                entries.append(directory(f"./{parent}/"))
        entries.append(file(f"./{name}", files[name]))
    return build(entries, compression)


def many_members(count: int) -> bytes:
    """A gzip'd archive of ``count`` empty files (small to send, many to extract)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.USTAR_FORMAT) as archive:
        for index in range(count):
            info = tarfile.TarInfo(f"f/{index:06d}")
            info.mtime = 1_700_000_000
            archive.addfile(info)
    return buffer.getvalue()


def _header(name: str, size: int, typeflag: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 1_700_000_000
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    block[156:157] = typeflag
    # Recompute the checksum over the changed type flag.
    block[148:156] = b" " * 8
    checksum = sum(block[:512])
    block[148:156] = b"%06o\0 " % checksum
    return bytes(block)


def _gzip_stream(chunks: Iterable[bytes]) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(chunk) for chunk in chunks]
    out.append(compressor.flush())
    return b"".join(out)


def _zeros(total: int, block: int = 1 << 20) -> Iterable[bytes]:
    zeros = bytes(block)
    while total > 0:
        step = min(block, total)
        yield zeros[:step]
        total -= step


def compression_bomb(size: int = 256 * 1024 * 1024) -> bytes:
    """gzip'd tar holding one file of ``size`` zero bytes: ~1000x expansion."""
    header = _header("bomb.bin", size, b"0")
    padding = (-size) % 512
    return _gzip_stream([header, *_zeros(size + padding), bytes(1024)])


def long_header_bomb(size: int = 64 * 1024 * 1024) -> bytes:
    """gzip'd tar whose GNU long-name block claims ``size`` bytes (read into memory by tarfile)."""
    header = _header("././@LongLink", size, b"L")
    padding = (-size) % 512
    return _gzip_stream([header, b"a" * 100, *_zeros(size - 100 + padding), bytes(1024)])


def random_bytes(size: int) -> bytes:
    return os.urandom(size)
