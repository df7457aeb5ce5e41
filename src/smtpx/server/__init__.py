"""The SMTP server: listeners, typed plugin hooks, AUTH, TLS, limits, events, BSMTP.

::

    from smtpx.server import Plugin, Server, ServerConfig, Listener

    class Accept(Plugin):
        async def process(self, session, transaction, envelope):
            await keep(envelope)
            return "Ok: kept"

    async with Server(Accept(), ServerConfig(listeners=[Listener(port=2525)])) as server:
        await server.serve_forever()
"""

from smtpx.server.config import Listener, MalformedMessages, ServerConfig, ServerTls
from smtpx.server.events import EnvelopeReceived, EventBus, Listening, Subscription
from smtpx.server.limits import ClientLimits
from smtpx.server.plugin import Offer, Plugin, Reject, Session, Transaction, password_mechanisms
from smtpx.server.server import Server

__all__ = [
    "ClientLimits",
    "EnvelopeReceived",
    "EventBus",
    "Listener",
    "Listening",
    "MalformedMessages",
    "Offer",
    "Plugin",
    "Reject",
    "Server",
    "ServerConfig",
    "ServerTls",
    "Session",
    "Subscription",
    "Transaction",
    "password_mechanisms",
]
