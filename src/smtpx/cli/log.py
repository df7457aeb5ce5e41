"""``smtpx log sessions|select``: the JSON mail log read back (F129)."""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Any

import click

from smtpx.cli.common import EXIT_FAILURE, EXIT_USAGE, Failure
from smtpx.units import iso_time

if TYPE_CHECKING:
    from smtpx.tools.logs import SessionStory

__all__ = ["log"]

_SOURCE = click.argument(
    "source", required=False, type=click.File("r", errors="replace"), default="-", metavar="[LOG]"
)


@click.group()
def log() -> None:
    """Read the mail log back ([log] format = "json"; journalctl -o cat gives it)."""


@log.command("sessions")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per session.")
@_SOURCE
def sessions_command(as_json: bool, source: IO[str]) -> None:
    """Rebuild the SMTP sessions of a mail log (LOG, or stdin): each session's
    transactions, and what became of the spool messages made from them.

    Subjects and header addresses come from fingerprints ([log] fingerprints = true).
    """
    from smtpx.tools.logs import read_lines, sessions  # noqa: PLC0415

    stories = sessions(read_lines(source))
    for story in stories:
        if as_json:
            click.echo(json.dumps(_story_json(story)))
        else:
            click.echo(_story_text(story))
    if not as_json:
        click.echo(f"{len(stories)} session{'' if len(stories) == 1 else 's'}", err=True)


@log.command("select")
@click.option("--sender", metavar="RE", help="The envelope sender matches (any case).")
@click.option("--recipient", metavar="RE", help="An envelope recipient matches.")
@click.option("--header-recipient", metavar="RE", help="A To or Cc address matches.")
@click.option("--subject", metavar="RE", help="The subject matches.")
@click.option("--message-id", metavar="RE", help="The Message-ID matches.")
@click.option("--flow", metavar="ID", help="A flow id of the story (srv##, in## or out##).")
@_SOURCE
def select_command(source: IO[str], **criteria: str | None) -> None:
    """Print the log lines (JSON, as they were) of the mail that matches: the session's,
    the transaction's and those of every spool message made from it. Exit 1 when
    nothing matches. --header-recipient and --subject need fingerprints.
    """
    from smtpx.tools.logs import LogQuery, read_lines, select_lines  # noqa: PLC0415

    try:
        query = LogQuery(**criteria)
    except ValueError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    picked = select_lines(list(read_lines(source)), query)
    for line in picked:
        click.echo(json.dumps(line, ensure_ascii=False))
    if not picked:
        raise Failure("no mail in the log matches", EXIT_FAILURE)


def _story_json(story: SessionStory) -> dict[str, Any]:
    return {
        "session": story.flow,
        "remote_ip": story.remote_ip,
        "first": story.first,
        "last": story.last,
        "inbound": [inbound.summary() for inbound in story.inbound.values()],
    }


def _story_text(story: SessionStory) -> str:
    when = "" if story.first is None else " " + iso_time(story.first)
    lines = [f"session {story.flow} {story.remote_ip or '-'}{when}"]
    for inbound in story.inbound.values():
        summary = inbound.summary()
        subject = f' "{summary["subject"]}"' if summary["subject"] is not None else ""
        lines.append(
            f"  {inbound.flow} {summary['sender'] or '?'} -> {', '.join(summary['recipients'])}"
            f" {summary['message_id'] or ''}{subject}".rstrip()
        )
        lines.extend(
            f"    {o['flow']} {o['spool_id'] or ''}: {o['outcome'] or 'queued'}"
            for o in summary["outbound"]
        )
    return "\n".join(lines)
