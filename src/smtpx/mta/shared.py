"""The Redis server several nodes share rate limits and greylisting through (``[redis]``).

redis-py is an optional dependency (``pip install 'smtpx[redis]'``): it is imported only
when ``[redis] url`` is set. :class:`Outage` is how the users of Redis fall back: after a
failed command, they stop asking it for ``RETRY_AFTER`` seconds (so that each message does
not wait ``[redis] timeout`` for a dead server) and work from this node's own memory, then
try again. Each outage and each recovery is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from smtpx.errors import ConfigError
from smtpx.mta.config import RedisSettings

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["REDIS_ERRORS", "RETRY_AFTER", "Outage", "connect"]

log = logging.getLogger("smtpx.mta.redis")

RETRY_AFTER = 5.0  # seconds on the node-local fallback before Redis is tried again


def _errors() -> tuple[type[BaseException], ...]:
    try:
        import redis.exceptions  # noqa: PLC0415 - optional dependency
    except ImportError:  # pragma: no cover - without the extra nothing uses Redis
        return (OSError, TimeoutError)
    return (redis.exceptions.RedisError, OSError, TimeoutError)


REDIS_ERRORS = _errors()


def connect(settings: RedisSettings) -> redis.asyncio.Redis:
    """A client of the configured server (connections are made on first use)."""
    assert settings.url is not None
    try:
        import redis.asyncio  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ConfigError("needs redis-py: pip install 'smtpx[redis]'", key="redis.url") from None
    return redis.asyncio.Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        retry_on_timeout=False,
    )


class Outage:
    """Whether Redis is to be asked now; :meth:`failed` and :meth:`worked` report."""

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self.what = what
        self.clock = clock
        self.down_until: float | None = None
        self.failures = 0

    def ask(self) -> bool:
        return self.down_until is None or self.clock() >= self.down_until

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.down_until is None:
            log.warning(
                "redis: %s on this node alone (no shared state) until Redis answers: %s",
                self.what,
                exc or type(exc).__name__,
            )
        self.down_until = self.clock() + RETRY_AFTER

    def worked(self) -> None:
        if self.down_until is not None:
            log.warning("redis: %s shared again", self.what)
            self.down_until = None
