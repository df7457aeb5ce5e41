"""Public test helpers: the in-memory transcript harness (more arrive with later layers)."""

from smtpx.testing.transcript import Handler, ReceivedMessage, Session, Transcript

__all__ = ["Handler", "ReceivedMessage", "Session", "Transcript"]
