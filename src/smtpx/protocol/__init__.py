"""The sans-I/O SMTP core: commands, replies, addresses, parameters, extensions, DATA framing,
the session state table, and the server and client connections that drive them.

Only the standard library is used, with the ``idna`` package for domain names (IDNA 2008,
pure computation), and nothing here does I/O: no asyncio, sockets, ssl, clocks, files or
logging handlers (a test checks the imports).
"""

from smtpx.protocol import replies
from smtpx.protocol.addresses import Address, Sender, parse_path
from smtpx.protocol.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    parse_command,
)
from smtpx.protocol.connection import ClientConnection, Limits, ServerConnection
from smtpx.protocol.data import BareNewlines, DataReader, DotStuffer, dot_stuff, dot_unstuff
from smtpx.protocol.domains import domain_to_ascii
from smtpx.protocol.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    ConnectionClosed,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Response,
)
from smtpx.protocol.extensions import Extensions
from smtpx.protocol.params import MailParams, RcptParams, xtext_decode, xtext_encode
from smtpx.protocol.replies import EnhancedStatus, Reply, ReplyParser
from smtpx.protocol.states import State

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "Address",
    "Auth",
    "AuthResponse",
    "BareNewlines",
    "Bdat",
    "ClientConnection",
    "Command",
    "ConnectionClosed",
    "Data",
    "DataChunk",
    "DataReader",
    "DotStuffer",
    "Ehlo",
    "EndOfChunk",
    "EndOfData",
    "EnhancedStatus",
    "Expn",
    "Extensions",
    "Helo",
    "Help",
    "Lhlo",
    "Limits",
    "Mail",
    "MailParams",
    "Noop",
    "Quit",
    "Rcpt",
    "RcptParams",
    "Reply",
    "ReplyParser",
    "Response",
    "Rset",
    "Sender",
    "ServerConnection",
    "StartTls",
    "State",
    "Vrfy",
    "domain_to_ascii",
    "dot_stuff",
    "dot_unstuff",
    "parse_command",
    "parse_path",
    "replies",
    "xtext_decode",
    "xtext_encode",
]
