"""What happened to one envelope: a value, never an exception (F68).

Every status carries the recipients the server refused, each with its reply. Use ``match``
on the class, or the ``ok`` / ``permanent`` properties::

    match status:
        case Accepted(remote_id=queue_id, rejected=rejected): ...
        case RejectedSender(reply=reply): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpx.errors import SMTPXError
from smtpx.protocol.addresses import Address
from smtpx.protocol.replies import Reply

__all__ = [
    "Accepted",
    "EnvelopeStatus",
    "RejectedAllRecipients",
    "RejectedBody",
    "RejectedSender",
    "RejectedSenderAndRecipients",
    "Unsendable",
]

Rejections = tuple[tuple[Address, Reply], ...]


def _rejections(rejected: Rejections) -> str:
    return ", ".join(f"{address} ({reply})" for address, reply in rejected)


@dataclass(frozen=True, slots=True)
class EnvelopeStatus:
    """Base of the outcomes. ``reply`` is the reply that decided the outcome."""

    reply: Reply
    rejected: Rejections = field(default=(), kw_only=True)

    @property
    def ok(self) -> bool:
        return False

    @property
    def permanent(self) -> bool:
        """True when sending the same envelope again would fail again (a 5xx)."""
        return self.reply.is_permanent

    def ok_or_error(self, *, allow_rejected_recipients: bool = False) -> None:
        """Raise :class:`DeliveryError` unless the envelope was accepted (for every
        recipient, unless ``allow_rejected_recipients``)."""
        if not self.ok or (self.rejected and not allow_rejected_recipients):
            raise DeliveryError(self)


@dataclass(frozen=True, slots=True)
class Accepted(EnvelopeStatus):
    """The server took the message (for the recipients not in ``rejected``).

    ``remote_id`` is the text of the final reply (usually holding the server's queue id).
    """

    @property
    def ok(self) -> bool:
        return True

    @property
    def remote_id(self) -> str:
        return self.reply.text

    def __str__(self) -> str:
        text = f"Envelope accepted ({self.remote_id})"
        return (
            f"{text} but rejected recipients: {_rejections(self.rejected)}"
            if self.rejected
            else text
        )


@dataclass(frozen=True, slots=True)
class RejectedSender(EnvelopeStatus):
    """MAIL FROM was refused."""

    def __str__(self) -> str:
        return f"Rejected sender ({self.reply})"


@dataclass(frozen=True, slots=True)
class RejectedAllRecipients(EnvelopeStatus):
    """Every RCPT TO was refused (``reply`` is the first refusal); no DATA was sent."""

    def __str__(self) -> str:
        return f"All recipients rejected: {_rejections(self.rejected)}"


@dataclass(frozen=True, slots=True)
class RejectedSenderAndRecipients(EnvelopeStatus):
    """DATA was refused: the server would not take this sender with these recipients."""

    def __str__(self) -> str:
        text = f"Rejected combination of sender and recipients ({self.reply})"
        return (
            f"{text}; rejected recipients: {_rejections(self.rejected)}" if self.rejected else text
        )


@dataclass(frozen=True, slots=True)
class RejectedBody(EnvelopeStatus):
    """The final reply after the content was an error."""

    def __str__(self) -> str:
        return f"Rejected message ({self.reply})"


@dataclass(frozen=True, slots=True)
class Unsendable(EnvelopeStatus):
    """Nothing was sent: the server cannot take this message (it is over the server's
    SIZE, or needs SMTPUTF8 the server lacks). ``reply`` is made up locally and says why."""

    def __str__(self) -> str:
        return f"Not sent ({self.reply})"


class DeliveryError(SMTPXError):
    """An envelope was not (fully) accepted; ``status`` says how."""

    def __init__(self, status: EnvelopeStatus) -> None:
        super().__init__(str(status))
        self.status = status
