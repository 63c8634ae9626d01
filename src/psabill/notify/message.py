"""Wrap a rendered report in a MIME message.

``multipart/alternative`` (text, then HTML) for the report itself; with the
CSV of every item it becomes ``multipart/mixed``: that alternative part, then
the attachment. A CR or LF in any header value is refused with :class:`EmailError`.
"""

from __future__ import annotations

import email.policy
import hashlib
import io
import socket
import zipfile
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import TYPE_CHECKING, Optional, Sequence

from psabill.errors import EmailError
from psabill.notify.templates import Rendered
from psabill.text import clean

# A CSV larger than this travels zipped: base64 adds a third, and Gmail clips a
# message over about 102 KB, which would hide what comes after the cut.
ZIP_OVER = 40 * 1024

if TYPE_CHECKING:  # pragma: no cover - typing only
    from email.message import EmailMessage


def default_from(*, local_ok: bool = False) -> str:
    """``psabill@<this host's full domain name>``.

    A host whose name has no dot would give an address no mail server accepts
    (or one that bounces into nowhere): refuse, unless ``local_ok`` (the file
    transport, which only writes the message to disk).
    """
    host = socket.getfqdn() or socket.gethostname() or "localhost"
    if "." not in host.strip("."):
        if local_ok:
            return f"psabill@{host or 'localhost'}"
        raise EmailError(
            f"cannot pick a sender address: this host's name {clean.clean(host)!r} is not a full "
            "domain name; set [notify] from, e.g. from = \"psabill@billing.example.com\""
        )
    return f"psabill@{host.strip('.')}"


def sender_for(configured: Optional[str], transport: str) -> str:
    """``[notify] from`` if set, else :func:`default_from` (strict unless writing a file)."""
    return configured or default_from(local_ok=transport == "file")


def _checked(name: str, value: str) -> str:
    if any(ch in value for ch in "\r\n\u2028\u2029\x85\x0b\x0c"):
        raise EmailError(f"refusing email header {name}: its value {clean.clean(value)!r} contains a line break")
    return value


def message_id(run: "object", sender: str) -> str:
    """The run's Message-ID: the same every time its report is sent, so a re-send is recognisable."""
    run_id = getattr(run, "id", None)
    account = getattr(run, "account", "") or ""
    started = getattr(run, "started_at", None)
    tag = hashlib.sha256(f"{account}|{run_id}|{started}".encode("utf-8")).hexdigest()[:16]
    return f"<psabill.run-{run_id}.{tag}@{_msgid_domain(sender)}>"


def build_message(
    rendered: Rendered,
    recipients: Sequence[str],
    *,
    sender: Optional[str] = None,
    now: Optional[datetime] = None,
    run_id: Optional[int] = None,
    message_id: Optional[str] = None,
    in_reply_to: Optional[str] = None,
) -> "EmailMessage":
    """A multipart/alternative message (text first, HTML preferred by clients), wrapped in
    multipart/mixed with the CSV when ``rendered`` carries one."""
    if not recipients:
        raise EmailError("no recipients: set [notify] emails")
    sender = sender or default_from()
    msg = EmailMessage(policy=email.policy.SMTP)
    try:
        # headerregistry parses the addresses and RFC 2047-encodes non-ASCII text;
        # it raises on malformed addresses, which we report as one line.
        msg["Subject"] = _checked("Subject", rendered.subject)
        msg["From"] = _checked("From", sender)
        msg["To"] = _checked("To", ", ".join(recipients))
        msg["Date"] = format_datetime(now or datetime.now(timezone.utc))
        msg["Message-ID"] = _checked("Message-ID", message_id or make_msgid(idstring="psabill",
                                                                          domain=_msgid_domain(sender)))
        if in_reply_to:  # a later attempt of the same occurrence: threaded under the first report
            msg["In-Reply-To"] = _checked("In-Reply-To", in_reply_to)
            msg["References"] = _checked("References", in_reply_to)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
        if run_id is not None:
            msg["X-Psabill-Run"] = str(run_id)
        msg.set_content(rendered.text, subtype="plain", charset="utf-8")
        msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
        if rendered.attachment_name:
            # A BOM so Excel reads the file as UTF-8 (names like "Zürich"); add_attachment
            # turns the alternative into the first part of a multipart/mixed.
            name = _checked("attachment name", rendered.attachment_name)
            data = ("\ufeff" + rendered.attachment).encode("utf-8")
            if len(data) <= ZIP_OVER:
                # charset: without it a mail client reads the text part as US-ASCII ("Kraków" garbled)
                msg.add_attachment(data, maintype="text", subtype="csv", filename=name, params={"charset": "utf-8"})
            else:  # a big run: the whole message stays under Gmail's ~102 KB clipping size
                msg.add_attachment(_zipped(name, data), maintype="application", subtype="zip",
                                   filename=name + ".zip")
    except (ValueError, TypeError, IndexError) as exc:
        raise EmailError(f"cannot build the email: {clean.message(exc)}") from None
    return msg


def _zipped(name: str, data: bytes) -> bytes:
    """``data`` as the one member ``name`` of a zip archive (every OS opens .zip natively)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def _msgid_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    domain = address.rpartition("@")[2]
    return "".join(ch for ch in domain if ch.isalnum() or ch in ".-") or "psabill.invalid"
