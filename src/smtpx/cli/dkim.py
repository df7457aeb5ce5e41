"""``smtpx dkim keygen``: a new DKIM key, and the DNS record to publish for it.

The private key goes to a new file (never over an existing one) with mode 0600; the TXT
record (zone-file form, split into strings of 255 characters) goes to standard output,
and the ``[[dkim.sign]]`` entry to add to the configuration to standard error.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from smtpx.cli.common import EXIT_USAGE, Failure

__all__ = ["dkim"]


@click.group()
def dkim() -> None:
    """DKIM signing keys (RFC 6376; Ed25519: RFC 8463).

    \b
    smtpx dkim keygen example.org s2026                      RSA, 2048 bits
    smtpx dkim keygen example.org e2026 --algorithm ed25519

    Publish the printed TXT record, add the printed [[dkim.sign]] entry to the
    configuration, and restart smtpx serve. Signing with both an RSA and an Ed25519 key
    (two entries) reaches receivers that do not know Ed25519 yet.
    """


@dkim.command()
@click.argument("domain")
@click.argument("selector")
@click.option(
    "--algorithm",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa (understood everywhere) or ed25519 (short; not yet checked by every receiver).",
)
@click.option(
    "--bits", type=click.IntRange(2048, 4096), default=2048, show_default=True, help="RSA size."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="The private key file (default: DOMAIN.SELECTOR.key here). Never overwritten.",
)
def keygen(domain: str, selector: str, algorithm: str, bits: int, output: str | None) -> None:
    """Make a key for DOMAIN (the d= domain) and SELECTOR; print its DNS TXT record."""
    from smtpx.mta.config import a_label  # noqa: PLC0415 - keep --help fast
    from smtpx.mta.dkim import generate_key, parse_key  # noqa: PLC0415

    try:
        domain = a_label(domain)
        selector = a_label(selector)
    except ValueError as exc:
        raise Failure(f"not a domain name or selector: {exc}", EXIT_USAGE) from None
    path = Path(output or f"{domain}.{selector}.key")
    pem = generate_key(algorithm, bits)
    _write_new(path, pem)
    record = parse_key(pem).txt_record()
    click.echo(f"{selector}._domainkey.{domain}. 3600 IN TXT ( {_strings(record)} )")
    click.echo(
        f"wrote the private key to {path} (mode 0600). Publish the TXT record above, "
        "then add to the configuration:\n\n"
        f'[[dkim.sign]]\ndomain = "{domain}"\nselector = "{selector}"\n'
        f'key_file = "{path.absolute()}"',
        err=True,
    )


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path``, readable by its owner only, on disk."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Failure(f"{path} exists: a key is never overwritten (remove it first)") from None
    except OSError as exc:
        raise Failure(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _strings(text: str) -> str:
    """``text`` as quoted zone-file strings of at most 255 characters (RFC 1035 3.3)."""
    return " ".join(f'"{text[at : at + 255]}"' for at in range(0, len(text), 255))
