"""The compiled build: with ``SMTPX_COMPILE=1``, a wheel built from this tree carries the
modules named in pyproject.toml's ``[tool.smtpx] compiled`` as C extensions made by mypyc
from the same (mypy --strict) source; without it, as always, pure Python. Everything else
of the build is in pyproject.toml. docs/performance.md says what it gains and how it is
tested."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent


def compiled_modules() -> list[str]:
    """The modules the compiled build makes C extensions of (dotted names)."""
    with open(HERE / "pyproject.toml", "rb") as file:
        names: list[str] = tomllib.load(file)["tool"]["smtpx"]["compiled"]
    return names


def _source(name: str) -> str:
    """A module's file, from the tree's top (a package's: its ``__init__.py``)."""
    path = Path("src", *name.split("."))
    return str(path / "__init__.py" if (HERE / path).is_dir() else path.with_suffix(".py"))


def extensions() -> list[Extension]:
    if os.environ.get("SMTPX_COMPILE", "0") != "1":
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 (only the compiled build needs mypy)

    sources = [_source(name) for name in compiled_modules()]
    print(f"smtpx: compiling {len(sources)} modules with mypyc", file=sys.stderr)
    # One shared runtime module for them all, named after the package (not a hash).
    return mypycify(sources, opt_level="3", group_name="smtpx")


setup(ext_modules=extensions())
