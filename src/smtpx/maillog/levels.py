"""Remapping log levels per component (F116, async_smtp's ``adjust_log_levels``).

A :class:`LevelRemap` says what a component's info, warning and error lines become, and
below which level its lines are dropped. Remaps apply where records reach a handler,
through a :class:`RemapFilter` (:func:`smtpx.maillog.configure_logging` installs one):

* by name: the longest matching prefix of the stdlib logger's name (``smtpx.client``)
  or of the mail log's component (``spool``, ``smtp-server/session``);
* for a piece of code: :func:`remapped` sets a remap for everything logged inside it,
  the asyncio tasks it starts included (a context variable). :mod:`smtpx.simplemail`
  and BSMTP reading and writing run under :data:`QUIET` (info becomes debug), as in
  async_smtp, so that a one-off send or a batch file does not fill an info log.

A remap only changes lines that are logged: a debug line stays unseen even when remapped
upwards, since the logger dropped it before any handler saw it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["QUIET", "LevelRemap", "RemapFilter", "remapped"]


@dataclass(frozen=True, slots=True)
class LevelRemap:
    """What each level becomes (None: unchanged); lines below ``minimum`` (after the
    remap) are dropped."""

    minimum: int = logging.NOTSET
    info_to: int | None = None
    warning_to: int | None = None
    error_to: int | None = None

    def apply(self, level: int) -> int:
        """The level a line logged at ``level`` gets."""
        if level == logging.INFO and self.info_to is not None:
            return self.info_to
        if level == logging.WARNING and self.warning_to is not None:
            return self.warning_to
        if level == logging.ERROR and self.error_to is not None:
            return self.error_to
        return level


QUIET = LevelRemap(info_to=logging.DEBUG)

_CURRENT: contextvars.ContextVar[LevelRemap | None] = contextvars.ContextVar(
    "smtpx_level_remap", default=None
)


@contextlib.contextmanager
def remapped(remap: LevelRemap) -> Iterator[None]:
    """Apply ``remap`` to every line logged inside the block (and the tasks it starts)."""
    token = _CURRENT.set(remap)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> LevelRemap | None:
    """The remap :func:`remapped` set for the running code, if any."""
    return _CURRENT.get()


class RemapFilter(logging.Filter):
    """A handler filter: remaps each record's level (see the module's text) and drops it
    when it falls below ``threshold`` or its remap's ``minimum``."""

    def __init__(
        self, by_name: Mapping[str, LevelRemap] | None = None, threshold: int = logging.NOTSET
    ) -> None:
        super().__init__()
        # Longest prefix first: "smtpx.client.cache" wins over "smtpx.client".
        self.by_name = sorted((by_name or {}).items(), key=lambda item: -len(item[0]))
        self.threshold = threshold

    def level_for(self, name: str, component: str, level: int) -> int | None:
        """The level a line of logger ``name`` (and mail log ``component``, or "")
        logged at ``level`` gets; None when it is dropped."""
        remap = _CURRENT.get()
        if remap is None:
            for prefix, candidate in self.by_name:
                if _under(name, prefix, ".") or (component and _under(component, prefix, "/")):
                    remap = candidate
                    break
            else:
                return level
        new = remap.apply(level)
        return None if new < max(self.threshold, remap.minimum) else new

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "mail", None)
        component = fields.get("component", "") if isinstance(fields, Mapping) else ""
        level = self.level_for(record.name, component or "", record.levelno)
        if level is None:
            return False
        if level != record.levelno:
            record.levelno = level
            record.levelname = logging.getLevelName(level)
        return True


def _under(name: str, prefix: str, separator: str) -> bool:
    return name == prefix or name.startswith(prefix + separator)
