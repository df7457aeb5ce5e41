"""The dependency rule of docs/architecture.md, checked on the source.

protocol  <-  auth  <-  io  <-  client, server  <-  spool  <-  mta  <-  cli

* A module may import smtpx modules of its own layer or lower ones, never higher; client and
  server do not import each other.
* protocol/ and auth/ are sans-I/O: they import only from a short list of standard modules,
  and idna (no asyncio, sockets, ssl, clocks, files, randomness or logging handlers).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "smtpx"

# Layer ranks: lower may be imported by higher.
RANK = {
    "_version": 0,
    "errors": 0,
    "compiled": 0,
    "protocol": 1,
    "units": 1,
    "compactjson": 1,
    "auth": 2,
    "envelope": 2,
    "hops": 2,
    "fingerprint": 2,
    "content": 2,
    "selector": 2,
    "config": 3,
    "maillog": 3,
    "io": 4,
    "client": 5,
    "server": 5,
    "simplemail": 6,
    "spool": 6,
    "testing": 7,
    "tools": 7,
    "mta": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}
NOT_EACH_OTHER = {("client", "server"), ("server", "client")}
SANS_IO = {"protocol", "auth"}
SANS_IO_STDLIB = {
    "__future__",
    "abc",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "encodings",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "idna",  # not stdlib: IDNA 2008 domain conversion, pure computation (protocol/domains.py)
    "ipaddress",
    "itertools",
    "re",
    "string",
    "typing",
    "unicodedata",
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of import nodes inside ``if TYPE_CHECKING:`` (not imported at run time)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skip


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every run-time import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_only(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.module == "smtpx":  # a submodule (a layer) or a name of the package's
                found.extend(
                    (node.lineno, f"smtpx.{a.name}" if a.name in RANK else "smtpx")
                    for a in node.names
                )
            else:
                assert node.module is not None
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_layer_is_known() -> None:
    unknown = {layer_of(p) for p in SOURCES} - RANK.keys()
    assert not unknown, f"add these to RANK in {__file__}: {unknown}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path: Path) -> None:
    source = layer_of(path)
    problems = []
    for line, name in imports(path):
        where = f"{path.relative_to(SRC)}:{line} imports {name}"
        if name.startswith("."):
            problems.append(f"{where}: use absolute imports")
            continue
        top = name.split(".")[0]
        if top == "smtpx":
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else "__init__"
            if target not in RANK:
                problems.append(f"{where}: unknown layer {target}")
            elif RANK[target] > RANK[source] or (source, target) in NOT_EACH_OTHER:
                problems.append(f"{where}: {source} may not import {target}")
        elif source in SANS_IO and top not in SANS_IO_STDLIB:
            problems.append(f"{where}: {source}/ is sans-I/O; {top} is not allowed there")
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom smtpx.client import x\n", encoding="utf-8")
    assert [name for _, name in imports(bad)] == ["asyncio", "smtpx.client"]
