"""The example outputs in ``docs/``: finding them, and telling whether a real
run still prints what they show.

An example block is a fenced block of the docs that shows what something
prints: a ``console`` block (commands after ``$ `` or ``# ``, the rest is their
output), or any block that is not code, configuration or a directive (``text``,
no language, ...).  Each line of its
output is read as a pattern in which the parts that differ from run to run
stand for any value of their kind: numbers and sizes (any binary unit:
``B``, ``KiB``, ``MiB``, ``GiB``), hexadecimal ids and hashes (also cut short,
``9c1e...``), the scheme and host of a URL, absolute paths, ``<placeholders>``,
runs of spaces, and ``...`` (anything).  Everything else must be printed as
written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Languages of fenced blocks that show input (code, configuration, commands
#: alone); every other block, directives (``{...}``) aside, shows output.
SOURCE_LANGUAGES = ("toml", "bash", "sh", "python", "js", "html", "yaml", "apache", "nginx")
#: Languages of sessions: commands after a prompt, each followed by its output.
SESSION_LANGUAGES = ("console", "shell-session")
PROMPTS = ("$ ", "# ")

_FENCE = re.compile(r"^(`{3,})([^\s`]*)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)

_TOKEN = re.compile(
    r"""
      (?P<ellipsis>\.\.\.|…)
    | (?P<placeholder><[a-z][a-z0-9_-]*>)
    | (?P<origin>https?://[^\s/'"]+)
    | (?P<path>(?<![\w.])/(?:home|srv|var|tmp)/[^\s,;()'"]*)
    | (?P<hex>\b[0-9a-f]{8,}\b|\b[0-9a-f]{4,}(?=\.\.\.|…))
    | (?P<size>\b\d+(?:\.\d+)?[ ](?:B|bytes|KiB|MiB|GiB|TiB)\b)
    | (?P<number>[+-]?\d+(?:\.\d+)?)
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)

_STANDS_FOR = {
    "ellipsis": r".*?",
    "placeholder": r"\S+?",
    "origin": r"https?://[^\s/]+",
    "path": r"/\S*?",
    "hex": r"[0-9a-f]+",
    "size": r"\d+(?:\.\d+)? (?:B|bytes|KiB|MiB|GiB|TiB)",
    "number": r"[+-]?\d+(?:\.\d+)?",
    "space": r"\s+",
}


@dataclass(frozen=True)
class Example:
    """One example block: where it is, and the output lines it shows."""

    page: str  # relative to docs/
    line: int
    first: str  # its first line: with the page, what names it
    output: tuple[str, ...]
    commands: tuple[str, ...] = ()  # of a console block, without the prompt

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_json(self) -> bool:
        return bool(self.output) and self.output[0].startswith("{")


def examples(docs: Path) -> Iterator[Example]:
    """Every example block of the pages under ``docs`` that shows output."""
    for path in sorted(docs.rglob("*.md")):
        if "_build" in path.parts:
            continue
        text = path.read_text()
        for match in _FENCE.finditer(text):
            language, body = match.group(2), match.group(3)
            if language.startswith("{") or language in SOURCE_LANGUAGES:
                continue
            lines = body.rstrip("\n").split("\n")
            session = language in SESSION_LANGUAGES
            output = tuple(output_lines(lines) if session else lines)
            if any(line.strip() for line in output):
                yield Example(
                    str(path.relative_to(docs)),
                    text.count("\n", 0, match.start()) + 1,
                    lines[0],
                    tuple(line for line in output if line.strip()),
                    tuple(commands(lines)) if session else (),
                )


def output_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines of a console session that are not commands (nor their
    continuation lines)."""
    continued = False
    for line in lines:
        if continued or line.startswith(PROMPTS):
            continued = line.endswith("\\")
            continue
        yield line


def commands(lines: Iterable[str]) -> Iterator[str]:
    """The commands of a console session, continuation lines joined."""
    command = ""
    for line in lines:
        if command or line.startswith(PROMPTS):
            command += line[len(PROMPTS[0]) :] if not command else " " + line.strip()
            if command.endswith("\\"):
                command = command[:-1].rstrip()
                continue
            yield command
            command = ""


def pattern(line: str) -> re.Pattern[str]:
    """The regular expression a documented output line stands for."""
    parts: list[str] = []
    position = 0
    text = line.strip()
    for token in _TOKEN.finditer(text):
        parts.append(re.escape(text[position : token.start()]))
        kind = token.lastgroup
        assert kind is not None
        if kind == "origin" and token.group().endswith(("...", "…")):
            parts.append(r"https?://\S*?")  # https://.../rest: any URL ending so
        else:
            parts.append(_STANDS_FOR[kind])
        position = token.end()
    parts.append(re.escape(text[position:]))
    return re.compile("".join(parts))


def unmatched(documented: Iterable[str], printed: str) -> list[str]:
    """The documented lines that no line of ``printed`` matches."""
    real = [line.strip() for line in printed.splitlines()]
    return [
        line
        for line in documented
        if not any(pattern(line).fullmatch(candidate) for candidate in real)
    ]


_JSON_MEMBER = re.compile(r'"([^"\\]+)":\s*("(?:[^"\\]|\\.)*")?')


def unmatched_json(documented: Iterable[str], printed: Any) -> list[str]:
    """The members of a documented JSON answer (keys, and the string values
    shown in full) that the real answer ``printed`` lacks."""
    members: dict[str, list[Any]] = {}

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                members.setdefault(key, []).append(item)
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(printed)
    missing = []
    for match in _JSON_MEMBER.finditer("\n".join(documented)):
        key, shown = match.group(1), match.group(2)
        if key not in members:
            missing.append(f'"{key}" (no such key)')
        elif shown is not None and "..." not in shown:
            value = json.loads(shown)
            expected = pattern(value)
            if not any(isinstance(v, str) and expected.fullmatch(v) for v in members[key]):
                missing.append(f'"{key}": {shown} (got {members[key]})')
    return missing
