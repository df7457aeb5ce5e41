"""The compiled build (``SMTPX_COMPILE=1``, setup.py): a wheel built as pip builds it
carries each module of pyproject.toml's ``[tool.smtpx] compiled`` as a C extension (mypyc),
and the tests of the layers those modules belong to pass against it, in a fresh
interpreter that imports smtpx from the wheel.

Skips without a C compiler (fails under SMTPX_REQUIRE_INTEROP=1: .ci/run installs gcc)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]

# The tests of the compiled modules' layers (the protocol core, the server, the client
# that talks to it, the streams under both, the spool's records and the mail log) and a
# real MTA's intake and relay.
COMPILED_TESTS = [
    "tests/protocol",
    "tests/server",
    "tests/client",
    "tests/io",
    "tests/spool",
    "tests/test_envelope.py",
    "tests/test_routed_headers.py",
    "tests/test_maillog.py",
    "tests/test_maillog_batching.py",
    "tests/test_maillog_direct.py",
    "tests/test_maillog_record.py",
    "tests/test_maillog_tags.py",
    "tests/test_compactjson.py",
    "tests/mta/test_mta.py",
    "tests/mta/test_console.py",
]


_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def _compiled_modules() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        names: list[str] = tomllib.load(file)["tool"]["smtpx"]["compiled"]
    return names


def _found_in_compiled(check: Callable[[ast.AST], list[int]]) -> dict[str, list[int]]:
    """The lines ``check`` finds in each compiled module's source (modules with none left
    out)."""
    found = {}
    for name in _compiled_modules():
        path = ROOT / "src" / name.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        lines = check(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[name] = lines
    return found


def _awaits_while_handling(tree: ast.AST) -> list[int]:
    """Lines that await in a finally or except block, or use ``async with`` (whose exit
    is awaited while the body's exception is handled)."""
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith):
            lines.append(node.lineno)
        if isinstance(node, ast.Try | ast.TryStar):
            blocks = [node.finalbody, *(handler.body for handler in node.handlers)]
            for statement in (s for block in blocks for s in block):
                lines += [
                    n.lineno
                    for n in ast.walk(statement)
                    if isinstance(n, ast.Await | ast.AsyncFor | ast.AsyncWith)
                ]
    return sorted(set(lines))


def test_no_compiled_coroutine_awaits_while_handling_an_exception() -> None:
    """mypyc's coroutines: one that awaits in a finally or except block leaves the
    exception it handles set for whatever runs next (with the server's session compiled
    so, a session cut off by close() made the next sessions fail with its
    CancelledError). Compiled modules await outside those blocks."""
    assert _found_in_compiled(_awaits_while_handling) == {}


def _calls_in_slice_bounds(tree: ast.AST) -> list[int]:
    """Lines that slice with a bound that calls something other than len()."""
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            bounds = (node.slice.lower, node.slice.upper, node.slice.step)
            calls = [n for b in bounds if b is not None for n in ast.walk(b)]
            if any(
                isinstance(n, ast.Call)
                and not (isinstance(n.func, ast.Name) and n.func.id == "len")
                for n in calls
            ):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_compiled_slice_bound_calls_a_function() -> None:
    """mypyc evaluates a slice's bound twice when it slices a memoryview (or any object it
    does not know): ``view[os.write(fd, view):]`` wrote each chunk twice, compiled. In
    compiled modules a bound calls nothing (len() excepted: it has no effect)."""
    assert _found_in_compiled(_calls_in_slice_bounds) == {}
    assert _calls_in_slice_bounds(ast.parse("v[os.write(fd, v):]\nv[len(p):]\n")) == [1]


def test_the_check_finds_an_await_while_handling() -> None:
    code = (
        "async def f():\n"
        "    try:\n        await g()\n    finally:\n        await h()\n"
        "    try:\n        pass\n    except E:\n        await h()\n"
        "    async with x:\n        pass\n"
    )
    assert _awaits_while_handling(ast.parse(code)) == [5, 9, 10]


@pytest.fixture(scope="module")
def compiled_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled wheel, built from this tree and unpacked (what PYTHONPATH points at)."""
    require_tool("gcc")
    base = tmp_path_factory.mktemp("compiled")
    # Built from a copy: setuptools puts into a wheel whatever its build/ folder holds, so
    # a build in the tree could carry an extension an earlier build left there.
    tree = base / "tree"
    shutil.copytree(ROOT, tree, ignore=_NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q"]
    built = subprocess.run(
        [*pip, "-w", str(base / "wheel"), str(tree)],
        env={**os.environ, "SMTPX_COMPILE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = (base / "wheel").glob("smtpx-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(base / "lib")
    return base / "lib"


def _env(lib: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(lib)}


@pytest.mark.timeout(900)
def test_each_named_module_is_an_extension(compiled_lib: Path) -> None:
    names = _compiled_modules()
    code = (
        "import importlib, sys\nfor n in sys.argv[1:]: print(importlib.import_module(n).__file__)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, *names],
        env=_env(compiled_lib),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    files = run.stdout.split()
    assert len(files) == len(names)
    for name, file in zip(names, files, strict=True):
        assert file.startswith(str(compiled_lib)), (name, file)
        assert file.endswith(".so"), (name, file)


@pytest.mark.timeout(900)
def test_the_layers_tests_pass_compiled(compiled_lib: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *COMPILED_TESTS],
        cwd=ROOT,
        env=_env(compiled_lib),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    assert " passed" in run.stdout.splitlines()[-1]
