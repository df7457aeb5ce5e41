"""The curated public surface: every name in __all__ resolves, and nothing is missing."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["smtpx", "smtpx.protocol", "smtpx.testing", "smtpx.errors"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_resolve(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing


def test_version() -> None:
    import smtpx

    assert smtpx.__version__.count(".") == 2
