"""``smtpx send``: compose a message with :mod:`smtpx.simplemail` and send it; and what
``smtpx sendmail`` (:mod:`smtpx.cli.sendmail`) shares with it: where to send, and how."""

from __future__ import annotations

import getpass
import socket
import sys
from collections.abc import Awaitable
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from smtpx.cli.common import (
    EXIT_FAILURE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Failure,
    HostPortType,
    read_secret,
    run,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from smtpx.auth import Credentials
    from smtpx.client import ClientConfig
    from smtpx.envelope import HostPort

__all__ = ["client_settings", "deliver", "login", "send", "server_options", "where_to"]

F = TypeVar("F", bound="Callable[..., Any]")
T = TypeVar("T")

TLS_MODES = ("if_available", "required", "none", "implicit")


def server_options(function: F) -> F:
    """Where to send, and how (TLS, AUTH)."""
    options = [
        click.option(
            "--server",
            type=HostPortType(),
            envvar="SMTPX_SERVER",
            help="The SMTP server (host:port; default: the [server] listen address of "
            "--config, else of the smtpx serve running, else of /etc/smtpx/smtpx.toml, else "
            "127.0.0.1:2525). Env: SMTPX_SERVER.",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, exists=True),
            envvar="SMTPX_CONFIG",
            help="Send to the MTA of this smtpx serve configuration. Env: SMTPX_CONFIG.",
        ),
        click.option(
            "--starttls",
            type=click.Choice(TLS_MODES),
            default="if_available",
            show_default=True,
            help="STARTTLS policy; implicit: TLS from the first byte (port 465).",
        ),
        click.option(
            "--ca-file",
            type=click.Path(dir_okay=False, exists=True),
            help="Verify the server's certificate against this CA (PEM).",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="Do not verify the certificate (verified by default with required/implicit).",
        ),
        click.option("--user", help="AUTH as this user (needs --password-file and TLS)."),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False),
            help="The password for --user (its first line).",
        ),
        click.option("--helo", help="The name to give in EHLO (default: this host's name)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def client_settings(
    starttls: str, ca_file: str | None, insecure: bool, helo: str | None
) -> ClientConfig:
    from smtpx.client import CertificateCheck, ClientConfig, TlsConfig, TlsMode  # noqa: PLC0415

    mode = TlsMode(starttls)
    verify = not insecure and (ca_file is not None or mode in (TlsMode.REQUIRED, TlsMode.IMPLICIT))
    tls = TlsConfig(
        mode=mode,
        certificate=CertificateCheck.VERIFY if verify else CertificateCheck.IGNORE,
        ca_file=ca_file,
    )
    values: dict[str, Any] = {"tls": (("", tls),)}
    if helo:
        values["helo_name"] = helo
    return ClientConfig(**values)


def login(user: str | None, password_file: str | None) -> Credentials | None:
    from smtpx.auth import Credentials  # noqa: PLC0415

    if (user is None) != (password_file is None):
        raise click.UsageError("--user and --password-file go together")
    if user is None or password_file is None:
        return None
    try:
        return Credentials.login(user, read_secret(password_file, "password"))
    except ValueError as exc:
        raise Failure(f"unusable login: {exc}", EXIT_USAGE) from None


def default_sender() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "nobody"
    return f"{user}@{socket.getfqdn()}"


def where_to(server: HostPort | None, config_file: str | None) -> tuple[HostPort, str]:
    """The SMTP server to send to, and how it was chosen (see :mod:`smtpx.cli.locate`)."""
    from smtpx.cli import locate  # noqa: PLC0415

    if server is not None:
        return server, "--server"
    return locate.smtp_server(config_file)


async def deliver(target: tuple[HostPort, str], action: Awaitable[T]) -> T:
    """Await ``action`` (a send to ``target``: a server, and how it was chosen), turning
    its errors into messages and exit codes."""
    from smtpx.client import DeliveryError  # noqa: PLC0415
    from smtpx.errors import (  # noqa: PLC0415
        AuthError,
        ConnectError,
        NoCommonMechanism,
        ParseError,
        SMTPXError,
    )

    server, how = target
    try:
        return await action
    except ConnectError as exc:
        raise Failure(
            f"cannot reach the SMTP server {server} (from {how}): {exc}", EXIT_UNREACHABLE
        ) from None
    except DeliveryError as exc:
        raise Failure(f"not sent: {exc}", EXIT_FAILURE) from None
    except NoCommonMechanism as exc:
        raise Failure(
            f"cannot log in: {exc} (password logins need TLS: try --starttls required)",
            EXIT_FAILURE,
        ) from None
    except AuthError as exc:
        raise Failure(f"cannot log in: {exc}", EXIT_FAILURE) from None
    except ParseError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    except SMTPXError as exc:
        raise Failure(f"{server}: {exc}", EXIT_FAILURE) from None
    except OSError as exc:
        raise Failure(f"{server}: {exc}", EXIT_UNREACHABLE) from None


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c in name for c in " \t") or not name.isascii():
        raise click.BadParameter(f"not 'Name: value': {text!r}", param_hint="'--header'")
    return name, value.strip()


@click.command()
@click.option("--to", multiple=True, metavar="ADDRESS", help="A To recipient (repeatable).")
@click.option("--cc", multiple=True, metavar="ADDRESS", help="A Cc recipient (repeatable).")
@click.option(
    "--bcc",
    multiple=True,
    metavar="ADDRESS",
    help="A blind recipient: in the envelope only, never in the header (repeatable).",
)
@click.option(
    "--from", "from_", metavar="ADDRESS", help="The sender (default: you@this host's name)."
)
@click.option("--subject", required=True, help="The subject.")
@click.option(
    "--attach",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Attach a file (repeatable; its type is guessed from its name).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="An extra header field (repeatable).",
)
@click.option("--html", is_flag=True, help="The body is HTML, not plain text.")
@server_options
@click.argument("body_file", required=False, type=click.File("rb"), metavar="[BODYFILE]")
def send(
    *,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    from_: str | None,
    subject: str,
    attach: tuple[str, ...],
    headers: tuple[str, ...],
    html: bool,
    server: HostPort | None,
    config_file: str | None,
    starttls: str,
    ca_file: str | None,
    insecure: bool,
    user: str | None,
    password_file: str | None,
    helo: str | None,
    body_file: IO[bytes] | None,
) -> None:
    """Compose a message and send it (the body comes from BODYFILE, or stdin).

    \b
    smtpx send --to ops@example.org --subject "Nightly report" \\
        --attach report.csv --server smtp.example.org:587 --starttls required \\
        --user me --password-file ~/.smtp-password < body.txt
    """
    from smtpx.errors import ParseError  # noqa: PLC0415
    from smtpx.simplemail import Attachment, build, text  # noqa: PLC0415
    from smtpx.simplemail import html as html_content  # noqa: PLC0415
    from smtpx.simplemail import send as send_mail  # noqa: PLC0415

    if not (to or cc or bcc):
        raise click.UsageError("give at least one recipient (--to, --cc or --bcc)")
    extra = [_header(text) for text in headers]
    credentials = login(user, password_file)
    config = client_settings(starttls, ca_file, insecure, helo)
    stream = body_file if body_file is not None else sys.stdin.buffer
    try:
        body = stream.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Failure(f"the body is not UTF-8 text: {exc}", EXIT_USAGE) from None
    try:
        attachments = [Attachment.of_file(path) for path in attach]
        content = html_content(body) if html else text(body)
        # Build once up front, so that bad addresses and headers are usage errors.
        build(
            from_=from_ or default_sender(),
            to=list(to),
            cc=list(cc),
            bcc=list(bcc),
            subject=subject,
            content=content,
            extra_headers=extra,
        )
    except (ParseError, ValueError, OSError) as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    target = where_to(server, config_file)
    status = run(
        deliver(
            target,
            send_mail(
                host=target[0].host,
                port=target[0].port,
                config=config,
                credentials=credentials,
                from_=from_ or default_sender(),
                to=list(to),
                cc=list(cc),
                bcc=list(bcc),
                subject=subject,
                content=content,
                attachments=attachments,
                extra_headers=extra,
            ),
        )
    )
    count = len(dict.fromkeys((*to, *cc, *bcc)))
    click.echo(f"sent to {count} recipient{'' if count == 1 else 's'}: {status.remote_id}")
