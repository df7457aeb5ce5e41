"""What the compiled build (``SMTPX_COMPILE=1``, docs/performance.md) reads in the source.

:func:`mypyc_attr` is ``mypy_extensions.mypyc_attr`` when mypy's extensions are installed
(the compiled build has them) and otherwise a decorator that does nothing: only mypyc
reads the attribute, and a pure-Python install does not need mypy's package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["mypyc_attr"]

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # (pure Python: nothing reads the attribute)

    def mypyc_attr(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        return lambda cls: cls
