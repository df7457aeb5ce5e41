"""DKIM (RFC 6376, RFC 8463) and ARC (RFC 8617) verification of inbound mail, with dkimpy.

dkimpy verifies one signature at a time and looks keys up synchronously through a
``dnsfunc`` hook. So the keys come first: the selectors and domains of every
DKIM-Signature and ARC signature are read from the header block, and their TXT records
fetched at once through smtpx's async resolver; then the verification (CPU: hashing the
body, RSA or Ed25519) runs in a worker thread with a ``dnsfunc`` that reads those answers.

What dkimpy leaves to the verifier is decided here, before it runs, so that each result
says why (RFC 8601 2.7.1):

* ``rsa-sha1`` signatures and RSA keys under 1024 bits are ``policy`` (RFC 8301 3.1, 3.2
  forbid treating them as valid; dkimpy would accept the first);
* a signature whose ``h=`` lacks From is ``permerror`` (RFC 6376 6.1.1);
* no key, a revoked key (empty ``p=``) or an unusable one is ``permerror``; a key lookup
  that failed for now is ``temperror``;
* at most :data:`MAX_SIGNATURES` signatures are checked (KumoMTA's limit too): a message
  with a hundred signatures costs no more than one with ten.

**RSA through OpenSSL.** dkimpy checks RSA signatures in pure Python (its ``int2str``
and ``pow``: over a millisecond a signature on this project's machine, holding the GIL)
and parses each public key with its own ASN.1 code. As for signing (:mod:`smtpx.mta.dkim`),
its one verification function (``dkim.RSASSA_PKCS1_v1_5_verify``) is wrapped so that
``cryptography`` (OpenSSL) checks SHA-256 signatures, and its key parser is cached; the
rest (canonicalization, tags, the hashing) is dkimpy's.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.util
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from smtpx.mta.inbound.lookup import Answer, AuthDns, Outcome
from smtpx.mta.inbound.results import MethodResult

__all__ = [
    "MAX_SIGNATURES",
    "ArcResult",
    "DkimResult",
    "KeyRing",
    "fetch_keys",
    "header_fields",
    "key_names",
    "verify_arc",
    "verify_dkim",
]

MAX_SIGNATURES = 10  # DKIM-Signature fields checked per message
MAX_ARC_KEYS = 20  # distinct keys fetched for an ARC chain (AMS and AS of each instance)
MIN_RSA_BITS = 1024  # RFC 8301 3.2
_ARC_FIELDS = (b"arc-message-signature", b"arc-seal")
_ARC_FIELD = re.compile(rb"(?:^|\n)arc-", re.IGNORECASE)
_COMMENTS = re.compile(rb"\((?:[^()\\]|\\.)*\)")
_DMARC_PASS = re.compile(rb"(?:^|[;\s])dmarc\s*=\s*pass(?:[;\s]|$)", re.IGNORECASE)

KeyRing = Mapping[bytes, Answer]  # b"sel._domainkey.example.com." -> its TXT answer


# -- RSA through OpenSSL (see the module docstring) --------------------------------------------

_dkimpy_rsa_verify = dkim.RSASSA_PKCS1_v1_5_verify


@functools.lru_cache(maxsize=256)
def _public_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def _rsa_verify(hash: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's ``RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)``, by OpenSSL for
    SHA-256 (what RFC 8301 leaves: rsa-sha1 never gets here, it is refused first)."""
    if hash.name.lower() != "sha256":
        return bool(_dkimpy_rsa_verify(hash, signature, public_key))
    try:
        key = _public_key(public_key["modulus"], public_key["publicExponent"])
    except (KeyError, ValueError):
        return bool(_dkimpy_rsa_verify(hash, signature, public_key))
    size = (key.key_size + 7) // 8
    if len(signature) > size:
        return False
    try:
        key.verify(
            signature.rjust(size, b"\0"),
            hash.digest(),
            padding.PKCS1v15(),
            utils.Prehashed(hashes.SHA256()),
        )
    except InvalidSignature:
        return False
    return True


dkim.RSASSA_PKCS1_v1_5_verify = _rsa_verify
dkim.parse_public_key = functools.lru_cache(maxsize=256)(dkim.parse_public_key)


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The outcome of one DKIM-Signature (``result`` is an RFC 8601 dkim result)."""

    result: str
    domain: str = ""  # d=
    selector: str = ""  # s=
    identity: str = ""  # i=, when the signature has one
    algorithm: str = ""  # a=
    b: str = ""  # the start of b= (RFC 6008 header.b), to tell signatures apart
    reason: str = ""

    def method_result(self) -> MethodResult:
        props = [("header.d", self.domain)] if self.domain else []
        if self.identity:
            props.append(("header.i", self.identity))
        props += [(k, v) for k, v in (("header.s", self.selector), ("header.a", self.algorithm))]
        if self.b:
            props.append(("header.b", self.b))
        props = [(k, v) for k, v in props if v]
        return MethodResult("dkim", self.result, reason=self.reason, properties=tuple(props))


@dataclass(frozen=True, slots=True)
class ArcResult:
    """The ARC chain: ``result`` is pass, fail or none (RFC 8617 section 4.4); ``sealers``
    are the ARC-Seal d= domains, newest first; ``instances`` the chain's length;
    ``vouched``: the newest ARC-Authentication-Results says ``dmarc=pass``."""

    result: str
    reason: str = ""
    sealers: tuple[str, ...] = ()
    instances: int = 0
    vouched: bool = False

    def method_result(self) -> MethodResult:
        comment = f"i={self.instances}" if self.instances else ""
        if self.sealers:
            comment += f" as.d={self.sealers[0]}"
        return MethodResult("arc", self.result, comment=comment.strip(), reason=self.reason)


# -- keys -----------------------------------------------------------------------------------


Fields = list[tuple[bytes, bytes]]  # a header block parsed: (name, raw value) each


def header_fields(header_block: bytes) -> Fields | None:
    """The fields of a header block as dkimpy parses them; None when it cannot."""
    try:
        fields, _ = dkim.rfc822_parse(header_block)
    except dkim.DKIMException:
        return None
    return list(fields)


def _signature_tags(fields: Fields | None, names: Iterable[bytes]) -> list[dict[bytes, bytes]]:
    wanted = tuple(names)
    return [_tags(value) for name, value in fields or () if name.lower() in wanted]


def _key_name(tags: Mapping[bytes, bytes]) -> bytes | None:
    selector, domain = tags.get(b"s"), tags.get(b"d")
    if not selector or not domain:
        return None
    return selector.strip() + b"._domainkey." + domain.strip().rstrip(b".") + b"."


def key_names(header: bytes | Fields | None) -> list[bytes]:
    """The key records the signatures of a message need: those of its first
    :data:`MAX_SIGNATURES` DKIM-Signature fields and of its ARC signatures. ``header``
    is the header block, or its fields (:func:`header_fields`)."""
    fields = header_fields(header) if isinstance(header, bytes) else header
    names: dict[bytes, None] = {}
    for tags in _signature_tags(fields, (b"dkim-signature",))[:MAX_SIGNATURES]:
        name = _key_name(tags)
        if name is not None:
            names[name.lower()] = None
    arc: dict[bytes, None] = {}
    for tags in _signature_tags(fields, _ARC_FIELDS):
        name = _key_name(tags)
        if name is not None and len(arc) < MAX_ARC_KEYS:
            arc[name.lower()] = None
    return list({**names, **arc})


async def fetch_keys(dns_: AuthDns, names: Iterable[bytes]) -> dict[bytes, Answer]:
    """The TXT answers for ``names``, asked all at once."""
    wanted = list(names)
    answers = await asyncio.gather(*(dns_.txt(name.decode("ascii", "replace")) for name in wanted))
    return dict(zip(wanted, answers, strict=True))


def _dnsfunc(keys: KeyRing) -> Callable[..., bytes | None]:
    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        answer = keys.get(name.lower())
        if answer is None or not answer.found:
            return None
        return answer.records[0]

    return txt


# -- DKIM -------------------------------------------------------------------------------------


def verify_dkim(message: bytes, keys: KeyRing) -> list[DkimResult]:
    """The result of each of the first :data:`MAX_SIGNATURES` DKIM-Signature fields of
    ``message`` (blocking: run it in a thread), top first; empty when there are none."""
    try:
        verifier = dkim.DKIM(message, minkey=MIN_RSA_BITS)
    except Exception as exc:  # MessageFormatError, mostly
        return [DkimResult("permerror", reason=f"message not parsable: {exc}")]
    values = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    return [
        _verify_one(verifier, index, _tags(value), keys)
        for index, value in enumerate(values[:MAX_SIGNATURES])
    ]


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return dict(dkim.util.parse_tag_value(value))
    except dkim.util.InvalidTagValueList:
        return {}


def _text(tags: Mapping[bytes, bytes], name: bytes) -> str:
    return re.sub(r"\s+", "", tags.get(name, b"").decode("ascii", "replace"))


def _verify_one(
    verifier: dkim.DKIM, index: int, tags: Mapping[bytes, bytes], keys: KeyRing
) -> DkimResult:
    domain, selector = _text(tags, b"d").lower(), _text(tags, b"s")
    algorithm = _text(tags, b"a").lower()
    signature = DkimResult(
        "permerror",
        domain=domain,
        selector=selector,
        identity=_text(tags, b"i"),
        algorithm=algorithm,
        b=_text(tags, b"b")[:12],
    )
    problem = _refusal(tags, keys)
    if problem is not None:
        result, reason = problem
        return _with(signature, result, reason)
    try:
        ok = verifier.verify(idx=index, dnsfunc=_dnsfunc(keys))
    except dkim.ValidationError as exc:  # "body hash mismatch", a bad x= ...
        return _with(signature, "fail", str(exc))
    except Exception as exc:  # DKIMException, or dkimpy tripping over a malformed field
        return _with(signature, "permerror", str(exc) or type(exc).__name__)
    if ok:
        return _with(signature, "pass", "")
    return _with(signature, "fail", "signature did not verify")


def _with(result: DkimResult, outcome: str, reason: str) -> DkimResult:
    return DkimResult(
        outcome,
        result.domain,
        result.selector,
        result.identity,
        result.algorithm,
        result.b,
        reason[:200],
    )


def _refusal(tags: Mapping[bytes, bytes], keys: KeyRing) -> tuple[str, str] | None:
    """What makes a signature fail before dkimpy sees it, or None."""
    if not tags:
        return "permerror", "malformed signature"
    try:
        dkim.validate_signature_fields(tags)
    except dkim.ValidationError as exc:
        return "permerror", str(exc)
    if tags[b"a"].strip().lower() == b"rsa-sha1":
        return "policy", "rsa-sha1 is not accepted (RFC 8301)"
    signed = [h.strip().lower() for h in tags[b"h"].split(b":")]
    if b"from" not in signed:
        return "permerror", "From is not signed (RFC 6376 6.1.1)"
    name = _key_name(tags)
    answer = keys.get(name.lower()) if name else None
    if answer is None:
        return "permerror", "no key looked up"
    if answer.outcome is Outcome.TEMPERROR:
        return "temperror", f"key lookup failed: {answer.error}"
    if not answer.found:
        return "permerror", "no key for signature"
    return _key_refusal(name or b"", answer.records[0])


def _key_refusal(name: bytes, record: bytes) -> tuple[str, str] | None:
    try:
        key_tags = dkim.util.parse_tag_value(record)
    except dkim.util.InvalidTagValueList:
        return "permerror", "key record not parsable"
    if not re.sub(rb"\s+", b"", key_tags.get(b"p", b"")):
        return "permerror", "key revoked"
    try:
        _pk, bits, ktag, _tlsrpt = dkim.evaluate_pk(name, record)
    except (dkim.DKIMException, ValueError, binascii.Error) as exc:
        return "permerror", f"unusable key: {exc}"
    if ktag == b"rsa" and bits is not None and bits < MIN_RSA_BITS:
        return "policy", f"RSA key of {bits} bits (RFC 8301)"
    return None


# -- ARC ----------------------------------------------------------------------------------------


def verify_arc(message: bytes, keys: KeyRing) -> ArcResult:
    """The ARC chain's validation status (blocking: run it in a thread)."""
    end = message.find(b"\r\n\r\n")
    if not _ARC_FIELD.search(message if end < 0 else message[: end + 2]):
        return ArcResult("none")  # no ARC field at all: dkimpy would parse it all again
    try:
        chain = dkim.ARC(message, minkey=MIN_RSA_BITS)
        cv, instances, reason = chain.verify(dnsfunc=_dnsfunc(keys))
    except Exception as exc:  # DKIMException, or dkimpy tripping over malformed ARC fields
        return ArcResult("fail", reason=(str(exc) or type(exc).__name__)[:200])
    sealers = tuple(
        str(result.get("as-domain", b"").decode("ascii", "replace")).lower() for result in instances
    )
    if cv == dkim.CV_None:
        return ArcResult("none")
    text = reason if isinstance(reason, str) else str(reason)
    if cv == dkim.CV_Pass:
        aar = instances[0].get("aar-value", b"") if instances else b""
        vouched = bool(_DMARC_PASS.search(_COMMENTS.sub(b" ", aar)))
        return ArcResult("pass", sealers=sealers, instances=len(instances), vouched=vouched)
    if any(a.outcome is Outcome.TEMPERROR for a in keys.values()):
        text = "a key lookup failed for now; " + text
    return ArcResult("fail", reason=text[:200], sealers=sealers, instances=len(instances))
