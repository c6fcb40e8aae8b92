"""Reading the deployment kit's HTCondor files (ops/htcondor) as HTCondor
would, for tests: the submit file through the official Python bindings
(``htcondor2``, PyPI ``htcondor``), its ``arguments`` and ``environment`` in
HTCondor's quoted syntax, and the DAG's node lines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .proxies import OPS

#: One ``name="value"`` of a VARS line (DAGMan: the value in double quotes,
#: a backslash before a double quote inside it).
VARS_PAIR = re.compile(r'\s*([A-Za-z_][\w.+-]*)\s*=\s*"((?:[^"\\]|\\.)*)"')

HTCONDOR = OPS / "htcondor"
SUBMIT_FILE = HTCONDOR / "dqr-upload.sub"
DAG_FILE = HTCONDOR / "dqr-report.dag"


def split_condor_words(value: str) -> list[str]:
    """Split an ``arguments`` or ``environment`` value in HTCondor's new
    syntax: the whole value in double quotes, words separated by white space,
    single quotes grouping a word with spaces, ``''`` a literal single quote
    inside them and ``""`` a literal double quote (condor_submit's manual,
    "arguments")."""
    if not (len(value) >= 2 and value[0] == '"' and value[-1] == '"'):
        raise ValueError(f"not in HTCondor's new (double-quoted) syntax: {value!r}")
    text = value[1:-1]
    words: list[str] = []
    word: list[str] = []
    started = quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        following = text[index + 1] if index + 1 < len(text) else ""
        if char == '"':
            if following != '"':
                raise ValueError(f"lone double quote in {value!r}")
            word.append('"')
            started = True
            index += 2
            continue
        if char == "'":
            if quoted and following == "'":
                word.append("'")
                index += 2
                continue
            quoted = not quoted
            started = True
        elif char.isspace() and not quoted:
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(char)
            started = True
        index += 1
    if quoted:
        raise ValueError(f"unclosed single quote in {value!r}")
    if started:
        words.append("".join(word))
    return words


def condor_environment(value: str) -> dict[str, str]:
    """An ``environment`` value in the new syntax, as a mapping."""
    pairs: dict[str, str] = {}
    for word in split_condor_words(value):
        name, sep, setting = word.partition("=")
        if not sep or not name:
            raise ValueError(f"environment entry without NAME=: {word!r}")
        pairs[name] = setting
    return pairs


@dataclass
class DagNode:
    name: str
    submit_file: str
    variables: dict[str, str] = field(default_factory=dict)
    parents: set[str] = field(default_factory=set)
    retry: str | None = None


def read_dag(path: Path = DAG_FILE) -> dict[str, DagNode]:
    """The nodes of a DAG file: JOB, VARS, PARENT ... CHILD and RETRY lines
    (DAGMan's own syntax; anything else in the file is refused, so the test
    reading it notices what it does not understand)."""
    nodes: dict[str, DagNode] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, *rest = line.split()
        keyword = keyword.upper()
        where = f"{path.name}:{number}"
        if keyword == "JOB":
            nodes[rest[0]] = DagNode(rest[0], rest[1])
        elif keyword == "VARS":
            node = nodes[rest[0]]
            text = line.split(None, 2)[2]
            position = 0
            while position < len(text.rstrip()):
                match = VARS_PAIR.match(text, position)
                if match is None:
                    raise ValueError(f'{where}: VARS wants name="value" pairs: {text[position:]!r}')
                node.variables[match[1]] = re.sub(r"\\(.)", r"\1", match[2])
                position = match.end()
        elif keyword == "PARENT":
            split = [word.upper() for word in rest].index("CHILD")
            for child in rest[split + 1 :]:
                nodes[child].parents.update(rest[:split])
        elif keyword == "RETRY":
            nodes[rest[0]].retry = " ".join(rest[1:])
        else:
            raise ValueError(f"{where}: not understood here: {line!r}")
    return nodes
