"""Public test helpers: the in-memory transcript harness and a scriptable server."""

from smtpx.testing.server import Hangup, ScriptedServer, serve_stream
from smtpx.testing.transcript import Handler, ReceivedMessage, Session, Transcript

__all__ = [
    "Handler",
    "Hangup",
    "ReceivedMessage",
    "ScriptedServer",
    "Session",
    "Transcript",
    "serve_stream",
]
