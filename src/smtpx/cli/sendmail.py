"""``sendmail`` and ``mailq``: the interface cron, PHP's ``mail()``, git send-email and most
Unix programs use to submit mail, by running ``/usr/sbin/sendmail``.

``smtpx sendmail`` is this command; so is ``smtpx`` itself when it runs under the name
``sendmail`` (a symlink), and ``mailq`` is ``sendmail -bp``. Modes (``-b``):

* ``-bm`` (the default): a message on stdin, recipients from the arguments and/or, with
  ``-t``, from To, Cc and Bcc; submitted over SMTP to the running ``smtpx serve``.
* ``-bs``: SMTP on stdin and stdout. The session is relayed byte for byte to the running
  MTA's listener, so the client talks to ``smtpx serve`` itself: the same replies, the
  same relay policy as any client on this host, and the spool has one writer. (Postfix's
  ``sendmail -bs`` speaks SMTP itself and drops the mail in its queue directory; smtpx's
  spool belongs to the running daemon, which holds its lock.)
* ``-bp``: the queue, as ``exim -bp`` shows it (through the control socket).
* ``-bv``: where mail for each recipient would go (local, a route, the smarthost, MX);
  nothing is sent.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import email.utils
import os
import socket
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

import click

from smtpx.cli.common import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE, Failure, run
from smtpx.cli.send import client_settings, deliver, login, server_options, where_to

if TYPE_CHECKING:
    from email.message import Message

    from smtpx.envelope import HostPort
    from smtpx.mta.config import MtaConfig
    from smtpx.mta.routing import Route
    from smtpx.protocol.addresses import Address, Sender

__all__ = ["sendmail"]

MODES = {"m": "deliver a message (the default)", "s": "SMTP on stdin/stdout", "p": "the queue"}
MODES["v"] = "verify where mail would go"


def read_message(stream: IO[bytes], *, dot_ends: bool) -> bytes:
    """stdin as sendmail reads it: to the end, or (without -i) to a line holding ``.``."""
    data = stream.read()
    if not dot_ends:
        return data
    kept: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.rstrip(b"\r\n") == b".":
            break
        kept.append(line)
    return b"".join(kept)


def _mode(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value not in MODES:
        supported = ", ".join(f"-b{m} ({what})" for m, what in MODES.items())
        raise click.BadParameter(f"-b{value} is not supported; smtpx has {supported}", ctx, param)
    return value


@click.command(context_settings={"help_option_names": ["--help"]})
@click.option(
    "-t",
    "from_headers",
    is_flag=True,
    help="Send to the To, Cc and Bcc addresses of the message (Bcc is removed), plus any "
    "given as arguments.",
)
@click.option(
    "-f",
    "-r",
    "sender",
    metavar="ADDRESS",
    help="The envelope sender (default: the From address, else you@this host's name).",
)
@click.option(
    "-F", "full_name", metavar="NAME", help="Your full name, for the From field when it is added."
)
@click.option(
    "-i",
    "ignore_dots",
    is_flag=True,
    help="A line holding only '.' does not end the message (nor does it with -oi).",
)
@click.option(
    "-o",
    "sendmail_options",
    multiple=True,
    metavar="OPTION",
    help="Sendmail -oX options: -oi is -i; the others (-oem, -odi, ...) are accepted and ignored.",
)
@click.option(
    "-B", "body_type", metavar="TYPE", help="7BIT or 8BITMIME: accepted (the client decides)."
)
@click.option(
    "-b",
    "mode",
    default="m",
    callback=_mode,
    metavar="MODE",
    help="-bm deliver (default), -bs SMTP on stdin/stdout, -bp list the queue, -bv verify.",
)
@click.option("-v", "verbose", is_flag=True, help="Say what the server answered.")
@server_options
@click.argument("recipients", nargs=-1, metavar="[RECIPIENT...]")
def sendmail(**options: Any) -> None:
    """Send a message read from stdin, like sendmail(8).

    \b
    printf 'To: ops@example.org\\nSubject: hi\\n\\nhello\\n' | smtpx sendmail -t

    Missing From, Date and Message-ID fields are added; Bcc fields are removed before
    sending (the Bcc addresses stay envelope recipients). Silent on success. Installed as
    /usr/sbin/sendmail (a symlink to smtpx), this is what programs that send mail run;
    as mailq, it lists the queue (-bp).
    """
    mode = options["mode"]
    if mode == "p":
        _queue(options["config_file"])
    elif mode == "s":
        _smtp_session(*where_to(options["server"], options["config_file"]))
    elif mode == "v":
        _verify(options)
    else:
        _submit(options)


# -- -bm: a message on stdin -------------------------------------------------------------


def _submit(options: dict[str, Any]) -> None:
    from smtpx.client import DeliveryError  # noqa: PLC0415
    from smtpx.simplemail import send_message  # noqa: PLC0415

    credentials = login(options["user"], options["password_file"])
    config = client_settings(
        options["starttls"], options["ca_file"], options["insecure"], options["helo"]
    )
    dot_ends = not (options["ignore_dots"] or "i" in options["sendmail_options"])
    data = read_message(sys.stdin.buffer, dot_ends=dot_ends)
    if not data.strip():
        raise Failure("no message on stdin", EXIT_USAGE)
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    recipients = _recipients(options, parsed)
    sender = _sender(options["sender"], parsed)
    message = _missing_fields(parsed, sender, options["full_name"]) + data
    target = where_to(options["server"], options["config_file"])
    status = run(
        deliver(
            target,
            send_message(
                message,
                sender=sender,
                recipients=recipients,
                host=target[0].host,
                port=target[0].port,
                config=config,
                credentials=credentials,
            ),
        )
    )
    if not status.ok or status.rejected:
        raise Failure(f"not sent: {DeliveryError(status)}", EXIT_FAILURE)
    if options["verbose"]:
        click.echo(str(status), err=True)


def _recipients(options: dict[str, Any], parsed: Message | None) -> list[Address]:
    from smtpx.cli import locate  # noqa: PLC0415
    from smtpx.errors import ParseError  # noqa: PLC0415
    from smtpx.protocol.addresses import Address  # noqa: PLC0415

    wanted: list[str] = []
    if options["from_headers"] and parsed is not None:
        values = [str(v) for name in ("To", "Cc", "Bcc") for v in parsed.get_all(name) or ()]
        wanted += [address for _, address in email.utils.getaddresses(values) if address]
    wanted += options["recipients"]
    if not wanted:
        raise click.UsageError(
            "no recipients: give them as arguments, or -t to take To, Cc and Bcc"
        )
    if any("@" not in r for r in wanted):  # "root", as cron says: a local user
        domain = locate.local_domain(options["config_file"])
        wanted = [r if "@" in r else f"{r}@{domain}" for r in wanted]
    try:
        return list(dict.fromkeys(Address.parse(r) for r in wanted))
    except (ParseError, ValueError) as exc:
        raise Failure(f"bad address: {exc}", EXIT_USAGE) from None


def _sender(given: str | None, parsed: Message) -> Sender:
    from smtpx.cli.send import default_sender  # noqa: PLC0415
    from smtpx.errors import ParseError  # noqa: PLC0415
    from smtpx.protocol.addresses import Sender  # noqa: PLC0415

    header_from = [a for _, a in email.utils.getaddresses(parsed.get_all("From") or ()) if a]
    try:
        if given is not None:
            return Sender.parse(given) if given.strip() else Sender.NULL
        if len(header_from) == 1:
            return Sender.parse(header_from[0])
        return Sender.parse(default_sender())
    except (ParseError, ValueError) as exc:
        raise Failure(f"bad address: {exc}", EXIT_USAGE) from None


def _missing_fields(parsed: Message, sender: Sender, full_name: str | None) -> bytes:
    """From (with -F's name), Date and Message-ID, for a message that lacks them."""
    from smtpx.cli.send import default_sender  # noqa: PLC0415

    added: list[str] = []
    if parsed.get("From") is None:
        address = sender.address
        text = str(address) if address is not None else default_sender()
        added.append(f"From: {email.utils.formataddr((full_name or '', text))}")
    if parsed.get("Date") is None:
        added.append(f"Date: {email.utils.formatdate(localtime=True)}")
    if parsed.get("Message-ID") is None:
        added.append(f"Message-ID: {email.utils.make_msgid(domain=socket.getfqdn())}")
    return b"".join(line.encode() + b"\r\n" for line in added)


# -- -bs: SMTP on stdin and stdout ----------------------------------------------------------


def _smtp_session(server: HostPort, how: str) -> None:
    """Relay the session on stdin/stdout to the MTA, byte for byte, until it hangs up."""
    out = sys.stdout.buffer
    try:
        upstream = socket.create_connection((server.host, server.port), timeout=10)
    except OSError as exc:
        out.write(b"421 4.3.0 smtpx sendmail: the mail system is not running\r\n")
        out.flush()
        raise Failure(
            f"cannot reach the SMTP server {server} (from {how}): {exc}", EXIT_UNREACHABLE
        ) from None
    upstream.settimeout(None)
    feeder = threading.Thread(target=_feed, args=(sys.stdin.fileno(), upstream), daemon=True)
    feeder.start()
    with upstream, contextlib.suppress(OSError):
        while data := upstream.recv(65536):
            out.write(data)
            out.flush()
    # The MTA hung up (after QUIT, or a 421): stdin may still be open, but the session is over.


def _feed(fd: int, upstream: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := os.read(fd, 65536):
            upstream.sendall(data)
        upstream.shutdown(socket.SHUT_WR)


# -- -bp: the queue -------------------------------------------------------------------------


def _queue(config_file: str | None) -> None:
    from smtpx.cli import locate, render  # noqa: PLC0415
    from smtpx.cli.client import ControlClient, Target  # noqa: PLC0415

    path, found = locate.control_socket(config_file)

    async def fetch() -> Any:
        async with ControlClient(Target(socket=path.absolute(), found=found)) as client:
            return await client.get_json("v1/spool/messages")

    messages = [m for m in run(fetch())["messages"] if m.get("queue") != "removed"]
    if not messages:
        click.echo("Mail queue is empty")
        return
    click.echo(str(render.render_status(messages, "exim", time.time())), nl=False)


# -- -bv: where mail would go ------------------------------------------------------------


def _verify(options: dict[str, Any]) -> None:
    from smtpx.cli import locate  # noqa: PLC0415

    parsed = None
    if options["from_headers"]:
        data = read_message(sys.stdin.buffer, dot_ends=not options["ignore_dots"])
        parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    recipients = _recipients(options, parsed)
    config = locate.mta_config(options["config_file"])
    lines = run(_routes(config, recipients))
    for line, _ in lines:
        click.echo(line)
    if not all(ok for _, ok in lines):
        sys.exit(EXIT_FAILURE)


async def _routes(config: MtaConfig, recipients: list[Address]) -> list[tuple[str, bool]]:
    from smtpx.mta.routing import DnsPythonResolver, NoRoute, Route, Router  # noqa: PLC0415

    router = Router(config, DnsPythonResolver())
    found: list[tuple[str, bool]] = []
    for recipient in recipients:
        result = await router.route(recipient.domain)
        if isinstance(result, Route):
            where = _describe(config, result, recipient.domain)
            found.append((f"{recipient}... deliverable: {where}", True))
        elif isinstance(result, NoRoute):
            found.append((f"{recipient}... undeliverable: {result.reply}", False))
        else:
            found.append((f"{recipient}... cannot tell now: {result.reason}", False))
    return found


def _describe(config: MtaConfig, route: Route, domain: str) -> str:
    if route.local:
        return f"local delivery into {config.local.maildir}"
    smarthost = config.routing.smarthost
    if smarthost is not None:
        how = "the smarthost"
    elif route.name in config.routing.routes:
        how = f"the route for {route.name}"
    elif domain.startswith("["):
        how = "the address literal"
    else:
        how = f"the MX of {route.name}"
    return f"relay to {', '.join(str(hop) for hop in route.hops)} ({how})"
