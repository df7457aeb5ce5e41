"""Rendering spool status, messages and events for people (F96).

Times read as people read them: relative (``5m12s``, ``in 59m``) in tables, ISO 8601 in
the local time zone where a moment is shown (``show``, events); never epoch seconds.

Everything works on the JSON shape of :func:`smtpx.mta.control.message_json`, whether it
came from the control plane or was read from the spool directory.

* ``table``: id, time on spool (green under 10 minutes, yellow under an hour, red under 3
  hours, blue beyond), next attempt, sender, recipients, next hop and the last deferral
  reason, laid out for the console's width (columns merge or go below 150 and 100);
* ``exim``: like ``exim -bp``;
* ``json``: the list of messages;
* ``ids``: one id per line.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from smtpx.units import exim_age, exim_size
from smtpx.units import short_duration as span

__all__ = [
    "FORMATS",
    "age_colour",
    "render_event",
    "render_message",
    "render_status",
]

FORMATS = ("table", "exim", "json", "ids")
TABLE_WIDTH = 180  # the reference's Ascii_table width, used when stdout is not a terminal

Message = Mapping[str, Any]


def sorted_messages(messages: Sequence[Message]) -> list[Message]:
    """Oldest first (time on spool), then by id."""
    return sorted(messages, key=lambda m: (float(m.get("spool_date") or 0), str(m.get("id"))))


def age_colour(seconds: float) -> str:
    """F96: green under 10 minutes, yellow under 60, red under 180, blue beyond."""
    minutes = seconds / 60
    if minutes < 10:
        return "green"
    if minutes < 60:
        return "yellow"
    if minutes < 180:
        return "red"
    return "blue"


def next_attempt(message: Message, now: float) -> str:
    status = message.get("status")
    words = {
        "frozen": "frozen",
        "removed": "removed",
        "quarantined": "quarantine",
        "delivered": "delivered",
        "sending": "now",
    }
    if status in words:
        return words[status]
    when = message.get("next_attempt")
    if when is None or float(when) <= now:
        return "now"
    return "in " + span(float(when) - now)


def next_hop(message: Message) -> str:
    hops = [str(h) for h in message.get("next_hops") or ()]
    if hops:
        return ", ".join(hops)
    return str(message.get("route") or "")


def recipients_of(message: Message) -> list[str]:
    """Recipients still to deliver, then the failed ones (marked)."""
    recipients = [str(r) for r in message.get("recipients") or ()]
    failed = [f"{f['recipient']} (failed)" for f in message.get("failed") or ()]
    return recipients + failed


def render_status(
    messages: Sequence[Message], fmt: str, now: float, width: int = TABLE_WIDTH
) -> str | Table:
    """The status in one of :data:`FORMATS`: text, or for ``table`` a rich table laid
    out for a console ``width`` columns wide."""
    ordered = sorted_messages(messages)
    if fmt == "ids":
        return "".join(f"{m['id']}\n" for m in ordered)
    if fmt == "json":
        return json.dumps(ordered, indent=2) + "\n"
    if fmt == "exim":
        return _exim(ordered, now)
    return _table(ordered, now, width)


def _exim(messages: Sequence[Message], now: float) -> str:
    lines: list[str] = []
    for message in messages:
        age = exim_age(now - float(message.get("spool_date") or now))
        size = exim_size(int(message.get("size") or 0))
        sender = message.get("sender")
        recipients = recipients_of(message)
        head = f"{age:>4} {size:>5} {message['id']}"
        if sender is None:
            head += " (sender and recipients hidden)"
        else:
            head += f" {sender}"
        if message.get("status") == "frozen":
            head += " *** frozen ***"
        elif message.get("status") in ("removed", "quarantined"):
            head += f" *** {message['status']} ***"
        lines.append(head)
        if sender is not None:
            lines.extend(f"          {r}" for r in recipients)
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")


# Below these widths the table drops or merges columns (60 columns still show each
# message's id, age, next attempt, envelope and last deferral reason).
WIDE = 150
MEDIUM = 100


def last_deferral(message: Message) -> str:
    """Why the last attempt did not deliver (empty before the first attempt)."""
    attempts = message.get("attempts") or ()
    return str(attempts[-1].get("error") or "") if attempts else ""


def _table(messages: Sequence[Message], now: float, width: int) -> Table:
    """The status table, laid out for ``width`` columns: every column at 150 and more,
    the next hop dropped below that, and below 100 one column for the envelope and the
    last deferral reason (dimmed) under each other."""
    count = len(messages)
    table = Table(
        caption=f"{count} message{'' if count == 1 else 's'}",
        caption_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        expand=False,
    )
    wide, medium = width >= WIDE, width >= MEDIUM
    id_width = max((len(str(m["id"])) for m in messages), default=2)
    table.add_column("id", no_wrap=True, min_width=id_width)
    table.add_column("time on spool" if medium else "age", no_wrap=True, justify="right")
    table.add_column("next attempt" if medium else "next", no_wrap=True)
    if medium:
        table.add_column("sender", overflow="fold", ratio=2)
        table.add_column("recipients", overflow="fold", ratio=2)
        if wide:
            table.add_column("next hop", overflow="fold", ratio=1)
        table.add_column("last deferral reason", overflow="fold", ratio=3)
    else:
        table.add_column("sender, recipients, last deferral reason", overflow="fold")
    for message in messages:
        age = now - float(message.get("spool_date") or now)
        cells: list[str | Text] = [
            str(message["id"]),
            Text(span(age), style=age_colour(age)),
            next_attempt(message, now),
        ]
        sender = str(message.get("sender", ""))
        recipients = "\n".join(recipients_of(message))
        reason = last_deferral(message)
        if medium:
            cells += [sender, recipients]
            if wide:
                cells.append(next_hop(message))
            cells.append(reason)
        else:
            envelope = Text(f"{sender}\n{recipients}")
            if reason:
                envelope.append(f"\n{reason}", style="dim")
            cells.append(envelope)
        table.add_row(*cells)
    return table


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(float(timestamp)).astimezone()
    return moment.isoformat(timespec="seconds")


def _next_attempt_at(message: Message, now: float) -> str:
    """The next attempt, relative, and when it is waiting for a moment, that moment."""
    relative = next_attempt(message, now)
    when = message.get("next_attempt")
    if relative.startswith("in ") and when is not None:
        return f"{relative} ({_when(when)})"
    return relative


def render_message(message: Message, out: Console, now: float) -> None:
    """``spool show``: envelope, state, attempts and header fields."""
    age = now - float(message.get("spool_date") or now)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", str(message["id"])),
        ("parent", str(message.get("parent_id") or "")),
        ("message-id", str(message.get("message_id") or "-")),
        ("status", f"{message.get('status')} ({message.get('queue')})"),
        ("sender", str(message.get("sender", ""))),
        ("recipients", "\n".join(str(r) for r in message.get("recipients") or ()) or "-"),
    ]
    failed = message.get("failed") or ()
    if failed:
        rows.append(("failed", "\n".join(f"{f['recipient']}: {f['reply']}" for f in failed)))
    rows += [
        ("size", f"{message.get('size')} octets"),
        (
            "spooled",
            Text(
                f"{_when(message.get('spool_date'))} ({span(age)} ago)",
                style=age_colour(age),
            ),
        ),
        ("next attempt", _next_attempt_at(message, now)),
        ("next hop", next_hop(message) or "-"),
        ("attempts", str(message.get("attempt_count", 0))),
    ]
    if message.get("quarantine_reason"):
        rows.append(("quarantine", str(message["quarantine_reason"])))
        held = message.get("quarantine") or {}
        if held.get("from_headers"):  # whose mail it is (F13)
            rows.append(("quarantined From", str(held["from_headers"])))
    if message.get("damaged"):
        rows.append(("damaged", Text(str(message["damaged"]), style="bold red")))
    related = message.get("related") or ()
    if related:
        rows.append(("related", ", ".join(str(r) for r in related)))
    for name, value in rows:
        grid.add_row(name, value)
    out.print(grid)
    attempts = message.get("attempts") or ()
    if attempts:
        out.print()
        out.print(Text("Last attempts", style="bold underline"))
        for attempt in attempts:
            out.print(f"  {_when(attempt.get('time'))}  {attempt.get('error')}", markup=False)
    headers = message.get("headers")
    if headers is not None:
        out.print()
        out.print(Text("Header", style="bold underline"))
        for name, value in headers:
            line = Text()
            line.append(f"{name}:", style="cyan")
            line.append(f" {value}")
            out.print(line, soft_wrap=True)


EVENT_STYLES = {
    "spooled": "cyan",
    "presend": "dim",
    "delivered": "green",
    "delayed": "yellow",
    "delayed_rate_limited": "yellow",
    "frozen": "blue",
    "unfrozen": "blue",
    "removed": "red",
    "recovered": "magenta",
    "purged": "red",
    "quarantined": "red",
    "bounced": "red",
    "ping": "dim",
}


def render_event(event: Mapping[str, Any]) -> Text:
    """One event: ``time  kind  id  detail``."""
    kind = str(event.get("kind", "?"))
    line = Text()
    line.append(_when(event.get("time")), style="dim")
    line.append("  ")
    line.append(f"{kind:<12}", style=EVENT_STYLES.get(kind, ""))
    if event.get("id"):
        line.append(f"  {event['id']}")
    if event.get("detail"):
        line.append(f"  {event['detail']}")
    return line
