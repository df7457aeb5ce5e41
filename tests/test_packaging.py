"""Packaging: what ``pip install`` builds from pyproject.toml, built here with every
warning an error (the build backend's deprecation warnings are what an installer shows)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hook(call: str, env: dict[str, str] | None = None) -> str:
    """Call a PEP 517 hook of the project's build backend (tools/smtpx_build.py, as
    pyproject.toml's backend-path has pip find it) in a fresh interpreter with ``-W
    error``; return the last line it prints."""
    code = f"import sys; sys.path.insert(0, 'tools'); import smtpx_build; print({call})"
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "deprecat" not in run.stderr.lower(), run.stderr
    return run.stdout.strip().splitlines()[-1]


def _build(hook: str, directory: Path) -> str:
    """Run a building hook; return the name it builds."""
    return _hook(f"smtpx_build.{hook}({str(directory)!r})")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tarfile.TarFile:
    directory = tmp_path_factory.mktemp("sdist")
    return tarfile.open(directory / _build("build_sdist", directory))


def test_metadata_builds_without_warnings(tmp_path: Path) -> None:
    name = _build("prepare_metadata_for_build_wheel", tmp_path)
    metadata = (tmp_path / name / "METADATA").read_text(encoding="utf-8")
    assert "License-Expression: MIT" in metadata


def test_the_sdist_builds_without_warnings(sdist: tarfile.TarFile) -> None:
    assert any(name.endswith("/pyproject.toml") for name in sdist.getnames())


def test_the_sdist_carries_docs_contrib_tests_and_the_project_files(
    sdist: tarfile.TarFile,
) -> None:
    names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = {
        path.relative_to(ROOT).as_posix()
        for folder in ("docs", "contrib", "tests", "bench", "src")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and "results" not in path.parts
        and ".egg-info" not in path.parent.name
    }
    wanted |= {"LICENSE", "CHANGELOG.md", "CONTRIBUTING.md", "README.md", "Makefile", ".ci/run"}
    wanted |= {"setup.py", "tools/smtpx_build.py"}
    assert wanted - names == set()
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_one_version(tmp_path: Path) -> None:
    """The version is written once (smtpx._version); the metadata and --version say it."""
    from click.testing import CliRunner

    from smtpx._version import __version__
    from smtpx.cli import main

    name = _build("prepare_metadata_for_build_wheel", tmp_path)
    metadata = (tmp_path / name / "METADATA").read_text(encoding="utf-8")
    assert f"\nVersion: {__version__}\n" in metadata
    shown = CliRunner().invoke(main, ["--version"], prog_name="smtpx")
    assert (shown.exit_code, shown.output) == (0, f"smtpx, version {__version__}\n")


@pytest.mark.parametrize(("compile_", "mypy"), [("1", True), ("0", False), (None, False)])
def test_the_compiled_build_alone_needs_mypy(compile_: str | None, mypy: bool) -> None:
    """SMTPX_COMPILE=1 adds mypy (mypyc), and smtpx's dependencies it type-checks against,
    to what a wheel's build needs; a plain build needs no more than setuptools."""
    env = {k: v for k, v in os.environ.items() if k != "SMTPX_COMPILE"}
    if compile_ is not None:
        env["SMTPX_COMPILE"] = compile_
    requires = _hook("smtpx_build.get_requires_for_build_wheel()", env)
    assert ("mypy" in requires) is mypy, requires
    assert ("idna" in requires) is mypy, requires
