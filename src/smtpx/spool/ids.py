"""Spool message ids derived from the envelope id (F7, async_smtp's ``Message.Id``):
``<envelope id>-<counter>``, e.g. ``0GDMZ2hQ8Kx3Ab_c-4Fz0aQ``.

Every message of one transaction (one per destination) starts with its envelope id, so
``grep`` on the id the client was given (``250 2.0.0 Ok: queued as ...``) finds them
all. The counter is six characters of the envelope id's sortable alphabet (36 bits),
counting up from a random start in each process, so that the same envelope spooled
again by a later process does not get an id it had before. An id the store already
holds is skipped.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from smtpx.envelope import _encode64

__all__ = ["SpoolIds", "parent_of"]

_COUNTER_CHARS = 6
_WRAP = 1 << (6 * _COUNTER_CHARS)


class SpoolIds:
    """Makes spool ids for one process (or one spool)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        start = (rng or random.Random()).getrandbits(6 * _COUNTER_CHARS)
        self._count = itertools.count(start)

    def __call__(self, parent: str, taken: Callable[[str], bool] = lambda _: False) -> str:
        """A fresh id for a message of envelope ``parent`` that ``taken`` says is free."""
        while True:
            candidate = f"{parent}-{_encode64(next(self._count) % _WRAP, _COUNTER_CHARS)}"
            if not taken(candidate):
                return candidate


def parent_of(message_id: str) -> str:
    """The envelope id a spool id was made from (an older, plain id: itself)."""
    parent, dash, counter = message_id.rpartition("-")
    return parent if dash and len(counter) == _COUNTER_CHARS else message_id
