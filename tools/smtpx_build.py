"""smtpx's build backend: setuptools', plus mypy (mypyc) and smtpx's dependencies among the
build requirements when ``SMTPX_COMPILE=1`` asks for the compiled build (see setup.py).

An editable install stays pure Python whatever the variable says: a compiled module would
be imported in place of its source, and edits of the source would do nothing until the
next build."""

from __future__ import annotations

import os
import sys
import tomllib
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import (
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

# The mypy whose mypyc the compiled build is made and tested with (the dev extra's).
MYPYC = "mypy>=1.10"

Settings = dict[str, Any] | None


def _compiling() -> bool:
    return os.environ.get("SMTPX_COMPILE", "0") == "1"


def get_requires_for_build_wheel(config_settings: Settings = None) -> list[str]:
    if not _compiling():
        return list(build_meta.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to find its own requirements, which must not compile yet:
    # mypy is what is asked for here.
    os.environ["SMTPX_COMPILE"] = "0"
    try:
        requires = list(build_meta.get_requires_for_build_wheel(config_settings))
    finally:
        os.environ["SMTPX_COMPILE"] = "1"
    return [*requires, MYPYC, *_dependencies()]


def _dependencies() -> list[str]:
    """smtpx's own dependencies: mypyc type-checks what it compiles, and the compiled
    modules import idna, aiohttp and the rest (a missing one is an error, not an Any)."""
    with open("pyproject.toml", "rb") as file:
        names: list[str] = tomllib.load(file)["project"]["dependencies"]
    return names


def build_editable(
    wheel_directory: str, config_settings: Settings = None, metadata_directory: str | None = None
) -> str:
    if _compiling():
        print("smtpx: an editable install is not compiled (SMTPX_COMPILE ignored)", file=sys.stderr)
        os.environ["SMTPX_COMPILE"] = "0"
    return str(build_meta.build_editable(wheel_directory, config_settings, metadata_directory))
