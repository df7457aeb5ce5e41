"""Public test helpers: transcripts, a plugin's session in memory (with emulated TLS), a
scriptable server, an in-memory network, a virtual clock, a counter of the event loop's
turns (:class:`LoopTurns`), a private Postfix instance (:mod:`smtpx.testing.postfix`)
and a private Dovecot LMTP server (:mod:`smtpx.testing.dovecot`) for interop tests, and
a DNS lab on loopback (:mod:`smtpx.testing.dns`: real name servers, DNSSEC included)."""

from smtpx.testing.clock import VirtualClockLoop, run_virtual
from smtpx.testing.network import MemoryNetwork
from smtpx.testing.plugin import PluginSession, plugin_session
from smtpx.testing.server import Hangup, ScriptedServer, serve_stream
from smtpx.testing.transcript import Handler, ReceivedMessage, Session, Transcript
from smtpx.testing.turns import LoopTurns

__all__ = [
    "Handler",
    "Hangup",
    "LoopTurns",
    "MemoryNetwork",
    "PluginSession",
    "ReceivedMessage",
    "ScriptedServer",
    "Session",
    "Transcript",
    "VirtualClockLoop",
    "plugin_session",
    "run_virtual",
    "serve_stream",
]
