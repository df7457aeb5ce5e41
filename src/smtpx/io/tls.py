"""TLS contexts for the client and the server, from the stdlib :mod:`ssl`.

Certificate verification uses the standard checks (chain to a trusted CA, then the host
name against the subject alternative names, wildcards included), not the reference's
"CN equals the host string" rule.
"""

from __future__ import annotations

import functools
import ssl

__all__ = ["client_context", "peer_chain", "server_context"]

_VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def _min_version(name: str | None) -> ssl.TLSVersion:
    if name is None:
        return ssl.TLSVersion.TLSv1_2
    try:
        return _VERSIONS[name]
    except KeyError:
        raise ValueError(f"unknown TLS version {name!r}; use one of {sorted(_VERSIONS)}") from None


@functools.lru_cache(maxsize=64)
def client_context(
    *,
    verify: bool,
    ca_file: str | None = None,
    ca_path: str | None = None,
    min_version: str | None = None,
    ciphers: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A client context. With ``verify`` the peer must present a certificate that chains
    to ``ca_file``/``ca_path`` (or the system store) and matches the host name.

    Contexts are cached: building one loads the CA store, which takes milliseconds.
    """
    if verify:
        context = ssl.create_default_context(cafile=ca_file, capath=ca_path)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = _min_version(min_version)
    if ciphers:
        context.set_ciphers(ciphers)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def server_context(
    *,
    cert_file: str,
    key_file: str | None = None,
    ca_file: str | None = None,
    min_version: str | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A server context with the certificate chain in ``cert_file`` (and its key).

    With ``ca_file``, client certificates are requested and checked when offered.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _min_version(min_version)
    context.load_cert_chain(cert_file, key_file)
    if ciphers:
        context.set_ciphers(ciphers)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The certificates the peer presented (DER, its own first, as sent; not a verified
    path), whatever the context's verification: what DANE matches against.

    Python 3.13 names this ``get_unverified_chain``; 3.10 to 3.12 have it on the
    internal ``_sslobj`` only. Elsewhere, the peer's own certificate alone.
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return tuple(_der(cert) for cert in chain)
    leaf = ssl_object.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


def _der(cert: object) -> bytes:
    if isinstance(cert, bytes):  # 3.13 returns DER bytes
        return cert
    return bytes(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
