"""smtpx: an asyncio SMTP toolkit and mail transfer agent.

The public API is re-exported here; deeper modules are stable too but this is the
curated surface (a test checks that every name listed resolves).
"""

from smtpx._version import __version__
from smtpx.errors import (
    LocalProtocolError,
    ParseError,
    ProtocolError,
    RemoteProtocolError,
    SMTPXError,
)
from smtpx.protocol import (
    Address,
    ClientConnection,
    Extensions,
    Limits,
    MailParams,
    RcptParams,
    Reply,
    Sender,
    ServerConnection,
    replies,
)

__all__ = [
    "Address",
    "ClientConnection",
    "Extensions",
    "Limits",
    "LocalProtocolError",
    "MailParams",
    "ParseError",
    "ProtocolError",
    "RcptParams",
    "RemoteProtocolError",
    "Reply",
    "SMTPXError",
    "Sender",
    "ServerConnection",
    "__version__",
    "replies",
]
