"""Client credentials: what the client may authenticate with, and the choice of mechanism.

:class:`Credentials` is an ordered list of elements, combined with ``+``::

    creds = Credentials.login("alice", "s3cret") + Credentials.anonymous()

* ``anonymous``: going on unauthenticated is acceptable when the server and the client
  have no mechanism in common. It never masks a failed AUTH: once a mechanism is chosen,
  its failure is the session's failure.
* ``login(username, password, on_behalf_of=None)``: offers PLAIN, and LOGIN as well when
  there is no ``on_behalf_of`` (LOGIN cannot carry an authorization identity). Both send
  the password, so both are offered only once TLS is in effect.
* ``custom(mechanism)``: any :class:`~smtpx.auth.ClientMechanism`; offered when TLS is in
  effect or the mechanism does not ``require_tls``. ``cram_md5`` and ``xoauth2`` are
  custom elements holding the built-in mechanisms.

The server's advertised order picks the mechanism (reference F52, F53).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from smtpx.auth._util import HIDDEN
from smtpx.auth.client import CramMD5, Login, Plain, XOAuth2
from smtpx.auth.interface import ClientMechanism
from smtpx.errors import NoCommonMechanism

__all__ = ["Credentials"]


@dataclass(frozen=True)
class _Anonymous:
    def __repr__(self) -> str:
        return "anonymous"


@dataclass(frozen=True, repr=False)
class _Login:
    username: str
    password: str
    on_behalf_of: str | None

    def __repr__(self) -> str:
        behalf = f", on_behalf_of={self.on_behalf_of!r}" if self.on_behalf_of is not None else ""
        return f"login({self.username!r}, password={HIDDEN}{behalf})"


@dataclass(frozen=True, repr=False)
class _Custom:
    mechanism: ClientMechanism

    def __repr__(self) -> str:
        # The mechanism's own repr may show secrets: show only its name.
        return f"custom({self.mechanism.mechanism})"


_Element = _Anonymous | _Login | _Custom


@dataclass(frozen=True, repr=False)
class Credentials:
    """An ordered list of credential elements (see the module docstring).

    ``Credentials()`` is the empty list: no mechanism, and no anonymous fallback, so
    :meth:`select` raises :class:`~smtpx.errors.NoCommonMechanism` whatever the server
    offers (nothing at all included).
    """

    elements: tuple[_Element, ...] = ()

    # -- named constructors ----------------------------------------------------------

    @classmethod
    def anonymous(cls) -> Credentials:
        """Going on unauthenticated is acceptable when no mechanism is common."""
        return cls((_Anonymous(),))

    @classmethod
    def login(cls, username: str, password: str, on_behalf_of: str | None = None) -> Credentials:
        """A username and password: PLAIN, plus LOGIN when ``on_behalf_of`` is None."""
        Plain(username, password, on_behalf_of)  # validates the fields early
        return cls((_Login(username, password, on_behalf_of),))

    @classmethod
    def custom(cls, mechanism: ClientMechanism) -> Credentials:
        """Any client mechanism."""
        return cls((_Custom(mechanism),))

    @classmethod
    def cram_md5(cls, username: str, password: str) -> Credentials:
        """CRAM-MD5 (RFC 2195); offered without TLS too, as the password never crosses."""
        return cls.custom(CramMD5(username, password))

    @classmethod
    def xoauth2(cls, username: str, token: str) -> Credentials:
        """XOAUTH2 with an OAuth 2.0 bearer token (TLS required)."""
        return cls.custom(XOAuth2(username, token))

    # -- combination -----------------------------------------------------------------

    def __add__(self, other: Credentials) -> Credentials:
        if not isinstance(other, Credentials):
            return NotImplemented
        return Credentials(self.elements + other.elements)

    def __iter__(self) -> Iterator[_Element]:
        return iter(self.elements)

    def __len__(self) -> int:
        return len(self.elements)

    def __repr__(self) -> str:
        return f"Credentials({' + '.join(map(repr, self.elements))})"

    # -- choice ----------------------------------------------------------------------

    @property
    def allows_anonymous(self) -> bool:
        """Whether going on unauthenticated is acceptable."""
        return any(isinstance(e, _Anonymous) for e in self.elements)

    def mechanisms(self, *, tls: bool) -> tuple[ClientMechanism, ...]:
        """The mechanisms offered, in the credentials' order, given the TLS state."""
        offered: list[ClientMechanism] = []
        for element in self.elements:
            if isinstance(element, _Login):
                if tls:
                    offered.append(Plain(element.username, element.password, element.on_behalf_of))
                    if element.on_behalf_of is None:
                        offered.append(Login(element.username, element.password))
            elif isinstance(element, _Custom) and (tls or not element.mechanism.require_tls):
                offered.append(element.mechanism)
        return tuple(offered)

    def select(self, server_mechanisms: Sequence[str], *, tls: bool) -> ClientMechanism | None:
        """The mechanism to authenticate with, or None to go on unauthenticated.

        ``server_mechanisms`` are the names the server advertised (from every ``AUTH``
        line of its EHLO reply), in its order, which is the order of preference: the first
        one that a client mechanism offers (compared case-insensitively) wins; among client
        mechanisms of the same name the first element wins. With nothing in common, None
        when the credentials allow anonymous, else :class:`~smtpx.errors.NoCommonMechanism`.
        """
        offered = self.mechanisms(tls=tls)
        by_name: dict[str, ClientMechanism] = {}
        for mechanism in offered:
            by_name.setdefault(mechanism.mechanism.upper(), mechanism)
        for name in server_mechanisms:
            chosen = by_name.get(name.upper())
            if chosen is not None:
                return chosen
        if self.allows_anonymous:
            return None
        raise NoCommonMechanism(
            client_mechanisms=tuple(dict.fromkeys(m.mechanism for m in offered)),
            server_mechanisms=tuple(server_mechanisms),
        )
