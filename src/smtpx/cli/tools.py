"""``smtpx bsmtp parse`` (F123), ``smtpx select`` (F12, F130) and ``smtpx stress-test``
(F125)."""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, TYPE_CHECKING, Any

import click

from smtpx.cli.common import EXIT_FAILURE, EXIT_USAGE, Failure, console, run

if TYPE_CHECKING:
    from smtpx.envelope import Envelope
    from smtpx.selector import Selector

__all__ = ["bsmtp", "select", "stress_test", "tools"]


def _selector(text: str | None) -> Selector | None:
    from smtpx.errors import ParseError  # noqa: PLC0415
    from smtpx.selector import parse  # noqa: PLC0415

    if text is None:
        return None
    try:
        return parse(text)
    except ParseError as exc:
        raise Failure(f"bad selector: {exc}", EXIT_USAGE) from None


@click.group()
def bsmtp() -> None:
    """Batch SMTP (RFC 2442) transcripts."""


@bsmtp.command("parse")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--select",
    metavar="EXPR",
    help="Print only the messages this envelope selector picks (see smtpx select --help).",
)
@click.argument("source", required=False, type=click.File("rb"), default="-", metavar="[FILE]")
def bsmtp_parse(as_json: bool, select: str | None, source: IO[bytes]) -> None:
    """Read a BSMTP transcript (FILE, or stdin) and print each message's envelope.

    Commands a server would refuse are printed as refusals; the exit status is then 1.
    """
    from smtpx.envelope import Envelope  # noqa: PLC0415
    from smtpx.server.bsmtp import read_bsmtp  # noqa: PLC0415

    selector = _selector(select)
    refusals = messages = picked = 0
    for item in read_bsmtp(source):
        if isinstance(item, Envelope):
            messages += 1
            if selector is not None and not selector.matches(item):
                continue
            picked += 1
            record: dict[str, Any] = {
                "type": "envelope",
                "sender": str(item.sender),
                "recipients": [str(r) for r in item.recipients],
                "size": len(item.message),
                "subject": item.subject_decoded(),
            }
            if as_json:
                click.echo(json.dumps(record))
            else:
                click.echo(f"message {messages}")
                click.echo(f"  sender:     {record['sender']}")
                click.echo(f"  recipients: {', '.join(record['recipients']) or '-'}")
                click.echo(f"  size:       {record['size']} octets")
                click.echo(f"  subject:    {record['subject'] or '-'}")
        else:
            refusals += 1
            if as_json:
                click.echo(json.dumps({"type": "refusal", "code": item.code, "reply": str(item)}))
            else:
                click.echo(f"refused: {item}")
    if not as_json:
        chosen = "" if selector is None else f" ({picked} selected)"
        click.echo(
            f"{messages} message{'' if messages == 1 else 's'}{chosen}, "
            f"{refusals} refusal{'' if refusals == 1 else 's'}",
            err=True,
        )
    if refusals:
        sys.exit(EXIT_FAILURE)


@click.command("select")
@click.option(
    "--bsmtp", "is_bsmtp", is_flag=True, help="FILE is a BSMTP transcript, not one message."
)
@click.option("--sender", help="The envelope sender (default: the address of From).")
@click.option(
    "--recipient",
    "recipients",
    multiple=True,
    help="An envelope recipient (repeatable; default: the addresses of To, Cc and Bcc).",
)
@click.argument("expression", metavar="EXPR")
@click.argument("source", required=False, type=click.File("rb"), default="-", metavar="[FILE]")
def select(
    *,
    is_bsmtp: bool,
    sender: str | None,
    recipients: tuple[str, ...],
    expression: str,
    source: IO[bytes],
) -> None:
    """Exit 0 when the envelope selector EXPR picks the message in FILE (or stdin), 1
    when it does not (2: a bad selector or message).

    \b
    EXPR is a boolean expression over these terms (REGEX between slashes, a / in it
    written \\/, (?i) for any case; it may match anywhere):
      exists_header NAME /REGEX/          some NAME field (any case) matches
      all_headers NAME /REGEX/            every NAME field matches (true if none)
      envelope_sender /REGEX/             the sender: a@b.example, or <> if null
      exists_envelope_recipient /REGEX/   some recipient matches
      all_envelope_recipients /REGEX/     every recipient matches (true if none)
      true, false, not X, X and Y, X or Y, ( X )

    \b
    Example:
      smtpx select 'envelope_sender /@example\\.com$/ and not exists_header X-Spam /yes/' m.eml

    FILE is one message (.eml), whose envelope comes from its header fields unless
    --sender and --recipient say otherwise; with --bsmtp, a BSMTP transcript whose every
    message is tested (exit 0 if any is picked). The same selectors work in
    smtpx spool status|count|freeze|send|remove --select and smtpx bsmtp parse --select.
    """
    selector = _selector(expression)
    assert selector is not None
    if is_bsmtp and (sender or recipients):
        raise click.UsageError("--sender and --recipient go with one message, not --bsmtp")
    envelopes = _bsmtp_envelopes(source) if is_bsmtp else [_eml(source, sender, recipients)]
    picked = 0
    for n, envelope in enumerate(envelopes, 1):
        matches = selector.matches(envelope)
        picked += matches
        what = "matches" if matches else "does not match"
        click.echo(f"message {n}: the selector {what}" if is_bsmtp else f"the selector {what}")
    if not picked:
        sys.exit(EXIT_FAILURE)


def _eml(source: IO[bytes], sender: str | None, recipients: tuple[str, ...]) -> Envelope:
    from smtpx.envelope import Envelope  # noqa: PLC0415
    from smtpx.errors import ParseError  # noqa: PLC0415

    data = source.read()
    try:
        if sender is not None and recipients:
            return Envelope.create(sender=sender, recipients=list(recipients), message=data)
        envelope = Envelope.of_email(data, ignore_unparseable_recipient_header=True)
        info = envelope.info
        if sender is not None:
            info = info.with_sender(sender)
        if recipients:
            info = info.with_recipients(recipients)
        return envelope.with_info(info)
    except ParseError as exc:
        raise Failure(f"no envelope: {exc} (give --sender and --recipient)", EXIT_USAGE) from None


def _bsmtp_envelopes(source: IO[bytes]) -> list[Envelope]:
    from smtpx.envelope import Envelope  # noqa: PLC0415
    from smtpx.server.bsmtp import read_bsmtp  # noqa: PLC0415

    envelopes = [item for item in read_bsmtp(source) if isinstance(item, Envelope)]
    if not envelopes:
        raise Failure("no message in the BSMTP transcript", EXIT_USAGE)
    return envelopes


@click.group()
def tools() -> None:
    """Tools for people who compare or check mail (async_smtp's tools)."""


@tools.command("transform")
@click.option(
    "--config",
    "config_file",
    type=click.File("r", encoding="utf-8"),
    required=True,
    help="The transform, as TOML ([headers], [bodies], [messages]; see smtpx.tools.transform).",
)
@click.argument("source", required=False, type=click.File("rb"), default="-", metavar="[FILE]")
def transform(config_file: IO[str], source: IO[bytes]) -> None:
    """Normalise a BSMTP stream of messages (FILE, or stdin) for comparing the output of
    two MTAs: mask, hash, drop or sort header fields, rewrite or hash bodies, sort the
    messages. The result is BSMTP on stdout, for diff.

    \b
    Example:
      smtpx tools transform --config compare.toml a.bsmtp > a.out
      smtpx tools transform --config compare.toml b.bsmtp > b.out && diff a.out b.out
    """
    from smtpx.client.bsmtp import write_bsmtp  # noqa: PLC0415
    from smtpx.errors import ConfigError, ParseError  # noqa: PLC0415
    from smtpx.tools.transform import load  # noqa: PLC0415

    try:
        rules = load(config_file.read())
    except (ConfigError, ParseError) as exc:
        raise Failure(f"{config_file.name}: {exc}", EXIT_USAGE) from None
    write_bsmtp(sys.stdout.buffer, rules.stream(_bsmtp_envelopes(source)))
    sys.stdout.buffer.flush()


@click.command("stress-test")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen on this address.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Listen on this port (0: any free one, so that it never collides with smtpx serve).",
)
@click.option(
    "-n",
    "--send-n-messages",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Stop once this many messages were received.",
)
@click.option(
    "--num-copies",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Copies of the message in circulation.",
)
@click.option(
    "--concurrent-senders",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Client sessions sending at the same time.",
)
@click.option(
    "--message-from-stdin",
    is_flag=True,
    help="Circulate the messages of a BSMTP transcript read from stdin (default: a generated one).",
)
@click.option(
    "--tls",
    is_flag=True,
    help="STARTTLS with a certificate made at run time (the client requires and verifies it).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log to stderr at this level.",
)
def stress_test(
    *,
    host: str,
    port: int,
    send_n_messages: int,
    num_copies: int,
    concurrent_senders: int,
    message_from_stdin: bool,
    tls: bool,
    log_level: str | None,
) -> None:
    """Measure messages per second through smtpx's own client and server.

    A server listens on --host/--port; whatever it receives it sends back to itself, until
    -n messages went round.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from smtpx.cli.stress import StressTest, generated_message  # noqa: PLC0415
    from smtpx.envelope import Envelope  # noqa: PLC0415
    from smtpx.server.bsmtp import read_bsmtp  # noqa: PLC0415

    if log_level:
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if tls:
        try:
            import trustme  # noqa: F401, PLC0415
        except ImportError:
            raise Failure(
                "--tls needs the trustme package (pip install trustme)", EXIT_USAGE
            ) from None
    if message_from_stdin:
        items = list(read_bsmtp(sys.stdin.buffer))
        messages = [item for item in items if isinstance(item, Envelope)]
        if not messages:
            raise Failure("no message in the BSMTP read from stdin", EXIT_USAGE)
    else:
        messages = [generated_message()]
    err = console(stderr=True)
    progress = Progress(
        TextColumn("messages"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task("messages", total=send_n_messages)
    test = StressTest(
        host=host,
        port=port,
        messages=messages,
        send_n_messages=send_n_messages,
        num_copies=num_copies,
        concurrent_senders=concurrent_senders,
        tls=tls,
        on_listening=lambda bound: click.echo(
            f"stress test: listening on {host}:{bound}{' (STARTTLS)' if tls else ''}", err=True
        ),
        on_progress=lambda received: progress.update(task, completed=received),
    )
    try:
        with progress:
            result = run(test.run())
    except OSError as exc:
        raise Failure(f"cannot listen on {host}:{port}: {exc}", EXIT_FAILURE) from None
    rate = f"{result.rate:.1f} messages/s"
    click.echo(f"{result.received} messages in {result.seconds:.2f}s: {rate}")
    if result.errors:
        for error in result.errors[:5]:
            click.echo(f"  error: {error}", err=True)
    if result.received < send_n_messages:
        raise Failure(
            f"stopped after {result.received} of {send_n_messages} messages "
            f"({len(result.errors)} errors)",
            EXIT_FAILURE,
        )
