"""The SMTP session state table, shared by the server and the client role.

Both ends of a session agree on its state because both see the same commands and the same
replies: the server moves when it sends a reply, the client when it receives one. The
table below is the one place that says what each (state, command, reply class) leads to,
and which commands a state allows (RFC 5321 sections 3.3 and 4.1.4, RFC 3030 for BDAT,
RFC 4954 for AUTH, RFC 3207 for STARTTLS).

Command kinds are the verbs, plus ``CONNECT`` (answered by the greeting), ``BDAT LAST``,
``.`` (the end of DATA content, answered by the final reply) and ``AUTH-RESPONSE`` (a line
inside an AUTH exchange).
"""

from __future__ import annotations

import enum

from smtpx.protocol import replies
from smtpx.protocol.replies import Reply

__all__ = ["ALLOWED", "State", "kind_of", "next_state", "refusal"]


class State(enum.Enum):
    GREETING = "greeting"  # connected, the server has not greeted yet
    REFUSED = "refused"  # the greeting was 554: only QUIT makes sense (RFC 5321 3.1)
    READY = "ready"  # no mail transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # 354 sent: message content until CRLF.CRLF
    BDAT = "bdat"  # some BDAT chunks accepted, LAST not yet
    BDAT_FAILED = "bdat-failed"  # a chunk was refused: RSET is needed (RFC 3030 section 3)
    AUTH = "auth"  # inside an AUTH exchange: every line is a SASL response
    CLOSED = "closed"

    # Members are singletons: identity hashing is exact, and much faster than Enum's
    # Python-level __hash__ on this hot path (every command looks a state up).
    __hash__ = object.__hash__


CONNECT = "CONNECT"
END_OF_DATA = "."
BDAT_LAST = "BDAT LAST"
AUTH_RESPONSE = "AUTH-RESPONSE"

_ANYTIME = frozenset({"NOOP", "QUIT", "RSET", "VRFY", "EXPN", "HELP"})

ALLOWED: dict[State, frozenset[str]] = {
    State.GREETING: frozenset(),
    State.REFUSED: frozenset({"QUIT", "NOOP", "RSET"}),
    State.READY: _ANYTIME | {"HELO", "EHLO", "LHLO", "MAIL", "STARTTLS", "AUTH"},
    State.MAIL: _ANYTIME | {"HELO", "EHLO", "LHLO", "RCPT"},
    State.RCPT: _ANYTIME | {"HELO", "EHLO", "LHLO", "RCPT", "DATA", "BDAT", BDAT_LAST},
    State.BDAT: frozenset({"BDAT", BDAT_LAST, "RSET", "NOOP", "QUIT"}),
    State.BDAT_FAILED: frozenset({"RSET", "NOOP", "QUIT"}),
    State.AUTH: frozenset({AUTH_RESPONSE}),
    State.DATA: frozenset({END_OF_DATA}),
    State.CLOSED: frozenset(),
}

# (state, kind) -> (state after a 2xx, after a 3xx, after a 4xx/5xx). None: unchanged.
_S = State
_TABLE: dict[tuple[State, str], tuple[State | None, State | None, State | None]] = {
    (_S.GREETING, CONNECT): (_S.READY, None, _S.REFUSED),
    (_S.READY, "MAIL"): (_S.MAIL, None, None),
    (_S.MAIL, "RCPT"): (_S.RCPT, None, None),
    (_S.RCPT, "RCPT"): (_S.RCPT, None, None),
    (_S.RCPT, "DATA"): (None, _S.DATA, None),
    (_S.DATA, END_OF_DATA): (_S.READY, None, _S.READY),
    (_S.RCPT, "BDAT"): (_S.BDAT, None, _S.BDAT_FAILED),
    (_S.BDAT, "BDAT"): (_S.BDAT, None, _S.BDAT_FAILED),
    (_S.RCPT, BDAT_LAST): (_S.READY, None, _S.BDAT_FAILED),
    (_S.BDAT, BDAT_LAST): (_S.READY, None, _S.BDAT_FAILED),
    (_S.READY, "AUTH"): (_S.READY, _S.AUTH, _S.READY),
    (_S.AUTH, AUTH_RESPONSE): (_S.READY, _S.AUTH, _S.READY),
    # STARTTLS's 220 restarts the session on the new channel (RFC 3207 section 4.2).
    (_S.READY, "STARTTLS"): (_S.READY, None, None),
}
# RSET, HELO and EHLO (and LMTP's LHLO) end any mail transaction (RFC 5321 4.1.1.1 and
# 4.1.1.5).
for _state in (_S.READY, _S.MAIL, _S.RCPT, _S.BDAT, _S.BDAT_FAILED):
    _TABLE[(_state, "RSET")] = (_S.READY, None, None)
for _state in (_S.READY, _S.MAIL, _S.RCPT):
    _TABLE[(_state, "HELO")] = (_S.READY, None, None)
    _TABLE[(_state, "EHLO")] = (_S.READY, None, None)
    _TABLE[(_state, "LHLO")] = (_S.READY, None, None)


def kind_of(verb: str, *, last: bool = False) -> str:
    """The table's kind for a command verb (BDAT with LAST is a kind of its own)."""
    return BDAT_LAST if last and verb == "BDAT" else verb


def next_state(state: State, kind: str, code: int) -> State:
    """The state after a reply with ``code`` to a command of ``kind`` sent in ``state``."""
    if code == 421:
        # RFC 5321 3.8: 421 means the server is closing the channel, whatever was asked.
        return State.CLOSED
    if kind == "QUIT" and code < 400:
        return State.CLOSED
    row = _TABLE.get((state, kind))
    if row is None:
        return state
    after = row[0] if code < 300 else row[1] if code < 400 else row[2]
    return state if after is None else after


_WHY = {
    "MAIL": "nested MAIL command",
    "RCPT": "need MAIL before RCPT",
    "DATA": "need RCPT before DATA",
    "BDAT": "need RCPT before BDAT",
    BDAT_LAST: "need RCPT before BDAT",
    "STARTTLS": "STARTTLS is not allowed inside a mail transaction",
    "AUTH": "AUTH is not allowed inside a mail transaction",
}


def refusal(state: State, kind: str) -> Reply:
    """The reply to a command that ``state`` does not allow."""
    if state is State.REFUSED:
        return replies.bad_sequence("No SMTP service here; only QUIT is accepted")
    if state is State.MAIL and kind in ("DATA", "BDAT", BDAT_LAST):
        return replies.no_valid_recipients()
    if state is State.BDAT_FAILED:
        return replies.bad_sequence("A BDAT chunk failed; send RSET (RFC 3030 section 3)")
    if state is State.BDAT:
        return replies.bad_sequence(f"{kind} is not allowed between BDAT chunks")
    why = _WHY.get(kind, f"{kind} is not allowed now")
    return replies.bad_sequence(f"Bad sequence of commands: {why}")
