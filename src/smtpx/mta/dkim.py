"""DKIM signing (RFC 6376; Ed25519 by RFC 8463) of the mail smtpx relays for its senders.

**Where.** At intake, in :meth:`RelayPlugin.process <smtpx.mta.relay.RelayPlugin.process>`,
before the spool write and the 250: the body is final there (nothing later changes a
byte: the spool stores and sends it as received), every copy (one spool message per
destination domain) carries the same signature, and a retry resends identical bytes
instead of signing again. Only mail from our own senders is signed: clients in
``relay.trusted_networks`` and authenticated users; inbound mail from elsewhere is not.

**What.** A message is signed when the domain of every address in its single ``From:``
field is a ``[[dkim.sign]]`` domain or a subdomain of it; the most specific such domain
wins, and each of its entries adds a signature (an RSA and an Ed25519 key give the dual
signature RFC 8463 recommends). ``c=relaxed/relaxed``, no ``l=``, ``t=`` set; the header
list is the entry's ``headers`` present in the message, and the ``oversign`` names once
more, so that a field of that name added later breaks the signature (RFC 6376 8.15).

**Off the event loop.** dkimpy wants the whole message in memory and is CPU-bound, so
signing runs in a worker thread. A message the server kept in memory is signed as it
is. A spilled message (bigger than ``server.spill_threshold``) is read from its file in
the thread, and such messages are signed one at a time, so at most one big message
(with dkimpy's copies, a few times ``server.max_message_size``) is in memory for
signing at once; nothing is left unsigned for its size.

**RSA through OpenSSL.** dkimpy makes RSA signatures with Python's ``pow``: 6 to 15 ms a
signature on this project's machine, holding the GIL all along, which capped intake near
70 messages/s and stalled the event loop. It has no hook for another implementation, so
its one RSA signing function (``dkim.RSASSA_PKCS1_v1_5_sign``) is wrapped: for a key that
smtpx loaded (found by its modulus) ``cryptography`` (OpenSSL) makes the same signature
(PKCS#1 v1.5 is deterministic: the same octets, tested); any other key goes to dkimpy's
own function. dkimpy also parses the PEM key at every signature (pure-Python ASN.1, about
a millisecond): its parser is wrapped in a cache. Everything else (canonicalization,
header selection, the field's format) is dkimpy's.

Keys are PEM files: RSA (PKCS#1 or PKCS#8, 2048 to 4096 bits) or Ed25519 (PKCS#8),
what ``smtpx dkim keygen`` or ``openssl genpkey`` write.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from smtpx.content import SpilledMessage
from smtpx.envelope import MAX_HEADER_BLOCK
from smtpx.errors import ConfigError, ParseError
from smtpx.mta.config import DKIM_HEADERS, DKIM_OVERSIGN, DkimSign
from smtpx.protocol.domains import domain_to_ascii

__all__ = [
    "DkimKey",
    "DkimSigner",
    "SigningKey",
    "generate_key",
    "load_key",
    "parse_key",
]

log = logging.getLogger("smtpx.mta")
T = TypeVar("T")

MIN_RSA_BITS = 2048  # RFC 8301 3.2 says SHOULD; we require it
MAX_RSA_BITS = 4096  # RFC 8301 3.2: what verifiers must support


# ---------------------------------------------------------------------------------------
# RSA signatures through OpenSSL (see the module docstring)

_OPENSSL_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # modulus -> key, for keys smtpx loaded
_dkimpy_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign


def _rsa_sign(hash: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's ``RSASSA_PKCS1_v1_5_sign(hash, private_key)``, made by OpenSSL when it can."""
    key = _OPENSSL_KEYS.get(private_key.get("modulus", 0))
    if key is None or hash.name.lower() != "sha256":
        return bytes(_dkimpy_rsa_sign(hash, private_key))
    return key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


@functools.lru_cache(maxsize=64)
def _parse_pem(data: bytes) -> dict[str, int]:
    """dkimpy's ``parse_pem_private_key``, once per key (dkimpy never changes the result)."""
    parsed: dict[str, int] = _dkimpy_parse_pem(data)
    return parsed


_dkimpy_parse_pem = dkim.parse_pem_private_key
dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign
dkim.parse_pem_private_key = _parse_pem


# ---------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True, slots=True, repr=False)
class DkimKey:
    """A private key in the form dkimpy takes (PEM for RSA, the base64 seed for
    Ed25519) and its public half as the ``p=`` of the DNS record."""

    algorithm: str  # "rsa" or "ed25519" (the k= tag)
    private: bytes
    public: str
    bits: int

    @property
    def signature_algorithm(self) -> bytes:
        return b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"

    def txt_record(self) -> str:
        """The TXT record to publish at ``SELECTOR._domainkey.DOMAIN`` (RFC 6376 3.6.1)."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public}"

    def __repr__(self) -> str:
        return f"DkimKey({self.algorithm}, {self.bits} bits)"


def parse_key(data: bytes) -> DkimKey:
    """A DKIM key from a PEM private key; ValueError says what is wrong with it."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM private key without a password ({exc})") from None
    except Exception as exc:  # cryptography raises its own for unsupported algorithms
        raise ValueError(f"not a usable private key ({exc})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return DkimKey("ed25519", base64.b64encode(raw), base64.b64encode(public).decode(), 256)
    if isinstance(key, rsa.RSAPrivateKey):
        bits = key.key_size
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise ValueError(
                f"an RSA key of {bits} bits: DKIM keys must have {MIN_RSA_BITS} to "
                f"{MAX_RSA_BITS} bits (RFC 8301)"
            )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _OPENSSL_KEYS[key.private_numbers().public_numbers.n] = key
        return DkimKey("rsa", pem, base64.b64encode(der).decode(), bits)
    raise ValueError(f"a {type(key).__name__}: DKIM signs with RSA or Ed25519 keys only")


def load_key(path: Path) -> DkimKey:
    """The key in the PEM file ``path``; ValueError names the problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return parse_key(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def generate_key(algorithm: str, bits: int = 2048) -> bytes:
    """A new private key as PEM (PKCS#8): ``"rsa"`` of ``bits`` bits, or ``"ed25519"``."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise ValueError(f"RSA keys for DKIM have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# ---------------------------------------------------------------------------------------
# Signing


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One ``[[dkim.sign]]`` entry with its key loaded; header names in lower case."""

    domain: str  # A-label, lower case
    selector: str
    key: DkimKey
    headers: tuple[str, ...] = DKIM_HEADERS
    oversign: tuple[str, ...] = DKIM_OVERSIGN

    def header_list(self, present: Counter[str]) -> list[bytes]:
        """The ``h=`` list for a message with ``present`` fields (lower-case name ->
        count): each signed field as often as it occurs, oversigned ones (signed too,
        whether listed in ``headers`` or not) once more."""
        names: list[bytes] = []
        for name in dict.fromkeys((*self.headers, *self.oversign)):
            count = present[name] + (name in self.oversign)
            names += [name.encode()] * count
        return names

    def covers(self, domain: str) -> bool:
        return domain == self.domain or domain.endswith("." + self.domain)


class DkimSigner:
    """Signs messages with the keys of the most specific domain that covers the From
    domains (see the module docstring)."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self.keys = tuple(keys)
        self._one_big = asyncio.Lock()  # spilled messages are signed one at a time
        # Threads of its own: a backlog of signing never delays the default executor's
        # work (getaddrinfo for deliveries, among others).
        self._threads = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="dkim")

    @classmethod
    def from_settings(cls, entries: Sequence[DkimSign]) -> DkimSigner:
        """Load the key files of ``entries``; ConfigError names the entry's key_file."""
        keys = []
        for index, entry in enumerate(entries):
            try:
                key = load_key(entry.key_file)
            except ValueError as exc:
                raise ConfigError(str(exc), key=f"dkim.sign[{index}].key_file") from None
            keys.append(
                SigningKey(entry.domain, entry.selector, key, entry.headers, entry.oversign)
            )
        return cls(keys)

    def keys_for(self, from_domains: Sequence[str]) -> list[SigningKey]:
        """The keys to sign with for these From domains (A-labels): those of the longest
        configured domain covering them all; none when no domain does."""
        covering = [k for k in self.keys if all(k.covers(d) for d in from_domains)]
        if not from_domains or not covering:
            return []
        best = max(len(k.domain) for k in covering)
        return [k for k in covering if len(k.domain) == best]

    async def signature(self, content: bytes | SpilledMessage) -> bytes:
        """The DKIM-Signature fields to put in front of ``content`` (empty when no key
        applies), computed in a worker thread. OSError when a spilled file fails."""
        if isinstance(content, bytes):
            return await self._in_thread(self.sign, content)
        async with self._one_big:
            return await self._in_thread(self._sign_spilled, content)

    async def _in_thread(self, sign: Callable[[T], bytes], content: T) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._threads, sign, content)

    def _sign_spilled(self, content: SpilledMessage) -> bytes:
        head = content.read_until(b"\r\n\r\n", MAX_HEADER_BLOCK)
        if not self._keys_of(head):
            return b""  # not ours to sign: the body is never read
        return self.sign(content.read())

    def sign(self, message: bytes) -> bytes:
        """The signatures for ``message`` (blocking: call it in a thread)."""
        keys = self._keys_of(message)
        if not keys:
            return b""
        try:
            signer = dkim.DKIM(message, linesep=b"\r\n")
            present = Counter(name.decode("ascii").lower() for name, _ in signer.headers)
            return b"".join(
                signer.sign(
                    key.selector.encode(),
                    key.domain.encode(),
                    key.key.private,
                    signature_algorithm=key.key.signature_algorithm,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=key.header_list(present),
                )
                for key in keys
            )
        except dkim.DKIMException as exc:
            log.warning("dkim: message not signed: %s", exc)
            return b""

    def _keys_of(self, message: bytes) -> list[SigningKey]:
        domains = from_domains(message)
        return self.keys_for(domains) if domains is not None else []


def from_domains(message: bytes) -> list[str] | None:
    """The A-label domains of the addresses in the message's single From field, or None
    when there is no such field, several, or an address without a usable domain."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    try:
        fields, _ = dkim.rfc822_parse(head)
    except dkim.DKIMException:
        return None
    values = [value for name, value in fields if name.lower() == b"from"]
    if len(values) != 1:
        return None
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    domains = []
    for _, address in email.utils.getaddresses([text]):
        local, at, domain = address.rpartition("@")
        if not (local and at and domain):
            return None
        try:
            domains.append(domain_to_ascii(domain.rstrip(".")).lower())
        except (ParseError, ValueError):
            return None
    return domains or None
