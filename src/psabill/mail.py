"""The results email: render a RunReport, deliver it, record what happened.

Three steps, each usable alone:

* :func:`render` turns a :class:`~psabill.report.RunReport` into a subject, a
  plain-text body and an HTML body (Jinja2 templates; ``[notify] template_dir``
  overrides any of them file by file, the rest fall back to the built-ins).
* :func:`build_message` wraps them in a MIME ``multipart/alternative`` message.
* :func:`deliver` hands it to SMTP, a sendmail-compatible command, or a file.

:func:`send_report` chains them for the runner and records the outcome in the
history with :meth:`State.set_email` *after* the run itself is recorded, so a
failed email never loses a result.

Policy:

1. Every name that came from outside (account, customer, SKU, PSA messages) is
   made single-line before it reaches any template: a CR, LF, tab or other
   control character is shown as a visible escape (``\\n``), so a customer
   name can neither forge a line in the text body nor a header.
2. The HTML template is autoescaped; the text and subject templates are not
   (they are never interpreted as markup).
3. A CR or LF in any header value is refused with :class:`EmailError`.
4. Error messages are one line and never contain the SMTP password.

jinja2 and smtplib are imported inside functions: a cron invocation that finds
nothing due must not pay for (or depend on) them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from psabill.errors import EmailError
from psabill.report import (
    ABORTED,
    FAILED,
    FAILED_RUN,
    INTERRUPTED,
    PARTIAL,
    PLANNED,
    RUNNING,
    SUCCESS,
    UNMAPPED,
    UPDATED,
    RunReport,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from email.message import EmailMessage

    from psabill.config import Config
    from psabill.state import State

TEMPLATE_NAMES = ("subject.txt", "body.txt", "body.html")
DEFAULT_SENDMAIL = ["/usr/sbin/sendmail", "-t", "-oi"]
DEFAULT_TIMEOUT = 30.0
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
OUTBOX_DIR = "outbox"  # under the state dir, when [notify.file] dir is not set
SUBJECT_MAX = 200  # long subjects get folded/truncated by clients anyway; keep it readable
LATE_THRESHOLD = 60  # cron fires a few seconds after :00; only a real delay is worth a line

# Email status values stored in the history.
SENT = "sent"
EMAIL_FAILED = "failed"
SKIPPED = "skipped"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


# -- making outside strings inert ------------------------------------------------


def inline(value: Any) -> str:
    """One visible line: control characters become escapes, nothing is dropped.

    Dropping a newline would silently merge two words; escaping keeps the name
    recognisable *and* inert.
    """
    text = "" if value is None else str(value)
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def header_text(value: str, limit: int = SUBJECT_MAX) -> str:
    """A rendered template output as a single header line (whitespace collapsed)."""
    text = " ".join(inline(part) for part in value.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "\u2026"
    return text


# -- the facts the templates show ---------------------------------------------------


def _zone(name: str) -> tzinfo:
    from psabill.clock import load_zone
    from psabill.errors import UsageError

    try:
        return load_zone(name)
    except UsageError:
        return timezone.utc  # a bad zone in an old report must not stop the email


def local_time(value: Optional[datetime], zone: tzinfo) -> str:
    """``Tue 2026-03-10 09:00 EDT`` (the zone name itself is shown once, elsewhere)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # the history stores UTC
    return value.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z").strip()


def duration_text(seconds: int) -> str:
    """``2 d 4 h``, ``1 h 5 min``, ``3 min``, ``45 s``: two units at most."""
    seconds = max(0, int(seconds))
    parts: List[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            amount, seconds = divmod(seconds, size)
            parts.append(f"{amount} {unit}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def delta_text(delta: Optional[int]) -> str:
    if delta is None:
        return ""
    return f"+{delta}" if delta > 0 else str(delta)  # negative numbers carry their own sign


def outcome_text(report: RunReport) -> str:
    """The result in words: "complete", "N companies not updated" or "failed"."""
    if report.status == SUCCESS:
        return "complete"
    if report.status == PARTIAL:
        n = len({item.customer for item in report.items if item.outcome == FAILED})
        if n == 0:
            return "some companies not updated"
        return f"{n} {'company' if n == 1 else 'companies'} not updated"
    if report.status in (FAILED_RUN, ABORTED, INTERRUPTED):
        return "failed"
    if report.status == RUNNING:
        return "still running"
    return inline(report.status)


TRIGGER_WORDS = {"scheduled": "scheduled", "manual": "manual", "dry-run": "dry run"}


def details_text(report: RunReport, history_url: Optional[str]) -> str:
    """The history URL for this run, or the command that shows it.

    ``{run_id}`` is substituted by plain replacement, never ``str.format``:
    a format string from the config could otherwise reach object attributes.
    """
    run_id = "" if report.run_id is None else str(report.run_id)
    if history_url and run_id:
        return inline(history_url.replace("{run_id}", run_id))
    if run_id:
        return f"psabill history show {run_id}"
    return "psabill history"


def context(report: RunReport, history_url: Optional[str] = None) -> Dict[str, Any]:
    """Everything the templates show, precomputed so text and HTML state the same facts."""
    zone = _zone(report.account_zone or "UTC")
    counts = report.counts
    changes = [
        {
            "customer": inline(i.customer),
            "sku": inline(i.sku),
            "old": "" if i.old is None else str(i.old),
            "new": "" if i.new is None else str(i.new),
            "delta": delta_text(i.delta),
        }
        for i in report.items
        if i.outcome in (UPDATED, PLANNED)
    ]
    failures = [
        {
            "customer": inline(i.customer),
            "sku": inline(i.sku),
            "message": inline(i.message) or "no reason was recorded",
            "hint": inline(i.hint),
        }
        for i in report.items
        if i.outcome == FAILED
    ]
    unmapped: List[Dict[str, str]] = []
    for i in report.items:
        if i.outcome != UNMAPPED:
            continue
        name = inline(i.customer)
        entry = next((u for u in unmapped if u["customer"] == name), None)
        if entry is None:
            unmapped.append({"customer": name, "skus": inline(i.sku), "message": inline(i.message)})
        elif i.sku:
            entry["skus"] += ", " + inline(i.sku)
    late = ""
    if report.late_seconds is not None and report.late_seconds >= LATE_THRESHOLD:
        late = f"started {duration_text(report.late_seconds)} late"
        if report.occurrence is not None:
            late += f" (it was due {local_time(report.occurrence, zone)})"
    history_is_url = bool(history_url and report.run_id is not None)
    return {
        "account": inline(report.account_name),  # may be empty: the templates then leave it out
        "zone": inline(report.account_zone or "UTC"),
        "outcome": outcome_text(report),
        "status": inline(report.status),
        "ok": report.status == SUCCESS,
        "trigger": TRIGGER_WORDS.get(report.trigger, inline(report.trigger)),
        "dry_run": report.trigger == "dry-run",
        "run_id": report.run_id,
        "psa": inline(report.psa_kind or ""),
        "started": local_time(report.started_at, zone),
        "date": report.started_at.astimezone(zone).strftime("%Y-%m-%d"),
        "finished": local_time(report.finished_at, zone),
        "late": late,
        "message": inline(report.message),
        "schedule": inline(report.schedule_text or ""),
        "next_run": local_time(report.next_run, zone),
        "counts": counts,
        "changes": changes,
        "failures": failures,
        "unmapped": unmapped,
        "details": details_text(report, history_url),
        "details_is_url": history_is_url,
        "widths": _widths(changes),
        "report": report,  # for custom templates that want more than the precomputed facts
    }


def _widths(changes: Sequence[Dict[str, str]]) -> Dict[str, int]:
    """Column widths for the plain-text change table."""
    return {
        "customer": max([len("Customer")] + [len(c["customer"]) for c in changes]),
        "sku": max([len("SKU")] + [len(c["sku"]) for c in changes]),
        "old": max([len("Old")] + [len(c["old"]) for c in changes]),
        "new": max([len("New")] + [len(c["new"]) for c in changes]),
        "delta": max([len("Change")] + [len(c["delta"]) for c in changes]),
    }


# -- templates -------------------------------------------------------------------------


def builtin_template_dir() -> Optional[Path]:
    """The shipped templates: ``psabill/templates`` in a wheel, ``templates/`` in a checkout."""
    try:
        from importlib.resources import files

        packaged = files("psabill") / "templates"
        if packaged.is_dir():
            # Installed wheels and editable installs unpack to the file system; a
            # zipped install is not supported by psabill (cron needs a real path).
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError, OSError):  # odd loaders: try the checkout
        pass
    source = Path(__file__).resolve().parents[2] / "templates"
    return source if source.is_dir() else None


def _environment(template_dir: Optional[Path]) -> Any:
    import jinja2

    loaders: List[Any] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    builtin = builtin_template_dir()
    if builtin is not None:
        loaders.append(jinja2.FileSystemLoader(str(builtin)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        # Only HTML is markup; escaping the text body would show "&amp;" to the reader.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm"), default=False),
        undefined=jinja2.StrictUndefined,  # a typo in a custom template fails loudly
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ljust"] = lambda value, width: str(value).ljust(int(width))
    env.filters["rjust"] = lambda value, width: str(value).rjust(int(width))
    return env


def render(
    report: RunReport,
    *,
    template_dir: Optional[Path] = None,
    history_url: Optional[str] = None,
) -> Rendered:
    """Subject, text and HTML for ``report``; template problems raise EmailError."""
    import jinja2

    env = _environment(template_dir)
    facts = context(report, history_url)
    out: Dict[str, str] = {}
    for name in TEMPLATE_NAMES:
        try:
            out[name] = env.get_template(name).render(**facts)
        except jinja2.TemplateNotFound:
            raise EmailError(
                f"email template {name} not found (template_dir {template_dir}, "
                f"built-ins {builtin_template_dir()})"
            ) from None
        except jinja2.TemplateError as exc:
            lineno = getattr(exc, "lineno", None)  # only syntax errors carry one
            where = f" line {lineno}" if lineno else ""
            raise EmailError(f"email template {name}{where}: {exc}") from None
        except Exception as exc:  # a custom template's filter/test can raise anything; the run must survive it
            raise EmailError(f"email template {name}: {type(exc).__name__}: {exc}") from None
    subject = header_text(out["subject.txt"])
    if not subject:
        raise EmailError("email template subject.txt rendered an empty subject")
    return Rendered(subject=subject, text=out["body.txt"], html=out["body.html"])


def render_for(cfg: "Config", report: RunReport) -> Rendered:
    """:func:`render` with ``template_dir`` and ``history_url`` taken from the config."""
    template_dir = cfg.get("notify.template_dir")
    return render(
        report,
        template_dir=cfg.resolve_relative(template_dir) if template_dir else None,
        history_url=cfg.get("notify.history_url"),
    )


# -- the MIME message -----------------------------------------------------------------


def default_from() -> str:
    import socket

    host = socket.gethostname() or "localhost"
    return f"psabill@{host}"


def _checked(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise EmailError(f"refusing email header {name}: its value {value!r} contains a line break")
    return value


def build_message(
    rendered: Rendered,
    recipients: Sequence[str],
    *,
    sender: Optional[str] = None,
    now: Optional[datetime] = None,
    run_id: Optional[int] = None,
) -> "EmailMessage":
    """A multipart/alternative message (text first, HTML preferred by clients)."""
    import email.policy
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

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
        msg["Message-ID"] = make_msgid(idstring="psabill", domain=_msgid_domain(sender))
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
        if run_id is not None:
            msg["X-Psabill-Run"] = str(run_id)
        msg.set_content(rendered.text, subtype="plain", charset="utf-8")
        msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    except (ValueError, TypeError, IndexError) as exc:
        raise EmailError(f"cannot build the email: {inline(exc)}") from None
    return msg


def _msgid_domain(sender: str) -> str:
    from email.utils import parseaddr

    address = parseaddr(sender)[1]
    domain = address.rpartition("@")[2]
    return domain or "psabill.invalid"


# -- delivery ---------------------------------------------------------------------------


def transport_name(cfg: "Config") -> str:
    """``[notify] transport``; unset means smtp when ``[notify.smtp]`` exists, else sendmail."""
    chosen = cfg.get("notify.transport")
    if chosen:
        return str(chosen)
    return "smtp" if cfg.get("notify.smtp") else "sendmail"


def smtp_password(cfg: "Config") -> Optional[str]:
    """The SMTP password from password_env, password_file or password (shared rules in
    :mod:`psabill.secrets`); a problem is an EmailError so the run result still stands."""
    from psabill.errors import ConfigError
    from psabill.secrets import resolve_secret

    try:
        return resolve_secret(cfg, "notify.smtp", "password", required=False)
    except ConfigError as exc:
        raise EmailError(exc.message) from None


def deliver(
    cfg: "Config",
    message: "EmailMessage",
    recipients: Sequence[str],
    *,
    outbox: Optional[Path] = None,
    name: Optional[str] = None,
) -> str:
    """Send ``message`` to every address in ``recipients``; return a one-line receipt.

    ``outbox`` is the file transport's directory when ``[notify.file] dir`` is
    unset; ``name`` is the file name it writes (the run id keeps one per run).
    Raises EmailError (one line, password-free) on any failure.
    """
    if not recipients:
        raise EmailError("no recipients: set [notify] emails")
    transport = transport_name(cfg)
    if transport == "smtp":
        password = smtp_password(cfg)
        try:
            return _deliver_smtp(cfg, message, recipients, password)
        except EmailError as exc:
            raise EmailError(redact(exc.message, password)) from None
    if transport == "sendmail":
        return _deliver_sendmail(cfg, message)
    if transport == "file":
        return _deliver_file(cfg, message, outbox, name)
    raise EmailError(f"[notify] transport {transport!r} is not smtp, sendmail or file")


def redact(text: str, secret: Optional[str]) -> str:
    """Remove a secret (and the base64 forms AUTH exchanges use) from a message."""
    import base64

    if not secret:
        return text
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, "***")
    return text


def _deliver_smtp(
    cfg: "Config", message: "EmailMessage", recipients: Sequence[str], password: Optional[str]
) -> str:
    import smtplib
    import socket
    import ssl
    from email.utils import parseaddr

    smtp = cfg.get("notify.smtp", {}) or {}
    host = str(smtp.get("host") or "localhost")
    security = str(smtp.get("security") or "starttls")
    port = int(smtp.get("port") or DEFAULT_PORTS[security])
    timeout = float(smtp.get("timeout") or DEFAULT_TIMEOUT)
    username = smtp.get("username")
    where = f"SMTP server {host}:{port}"
    if username and not password:
        raise EmailError(
            f"[notify.smtp] username {username!r} has no password: set password_env, "
            "password_file or password"
        )

    tls: Optional[ssl.SSLContext] = None
    if security in ("ssl", "starttls"):
        ca_file = smtp.get("ca_file")
        try:
            tls = ssl.create_default_context(
                cafile=str(cfg.resolve_relative(ca_file)) if ca_file else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise EmailError(f"cannot load [notify.smtp] ca_file {ca_file}: {_reason(exc)}") from None

    envelope_from = parseaddr(str(message["From"]))[1]
    client: Optional[smtplib.SMTP] = None
    try:
        if security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=tls)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        client.ehlo()
        if security == "starttls":
            if not client.has_extn("starttls"):
                raise EmailError(
                    f"{where} does not offer STARTTLS: set [notify.smtp] security = \"ssl\" "
                    "(port 465) or \"none\" on a trusted network"
                )
            client.starttls(context=tls)
            client.ehlo()
        if username:
            client.login(str(username), str(password))
        refused = client.send_message(message, from_addr=envelope_from, to_addrs=list(recipients))
        if refused:
            raise EmailError(
                f"{where} refused {', '.join(sorted(refused))} "
                f"(delivered to the other {len(recipients) - len(refused)})"
            )
    except EmailError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise EmailError(
            f"{where} rejected the login for {username!r}: {_smtp_reply(exc)} "
            "(check [notify.smtp] username and password)"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise EmailError(f"{where} refused every recipient: {', '.join(sorted(exc.recipients))}") from None
    except smtplib.SMTPSenderRefused as exc:
        raise EmailError(
            f"{where} refused the sender {envelope_from}: {_smtp_reply(exc)} (set [notify] from)"
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise EmailError(f"{where}: {_reason(exc)}") from None
    except smtplib.SMTPResponseException as exc:
        raise EmailError(f"{where} answered {_smtp_reply(exc)}") from None
    except ssl.SSLCertVerificationError as exc:
        raise EmailError(
            f"TLS with {where} failed: {exc.verify_message or _reason(exc)} "
            "(set [notify.smtp] ca_file to trust a private CA or self-signed certificate)"
        ) from None
    except ssl.SSLError as exc:
        raise EmailError(
            f"TLS with {where} failed: {_reason(exc)} (is security = \"{security}\" right for port {port}?)"
        ) from None
    except socket.timeout:
        raise EmailError(f"{where} did not answer within {timeout:g}s") from None
    except smtplib.SMTPServerDisconnected as exc:
        raise EmailError(f"{where} closed the connection: {_reason(exc) or 'no reason given'}") from None
    except smtplib.SMTPException as exc:
        raise EmailError(f"{where}: {_reason(exc)}") from None
    except OSError as exc:
        raise EmailError(f"cannot connect to {where}: {exc.strerror or _reason(exc)}") from None
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()  # the server already hung up; just drop the socket
    security_word = {"ssl": "SSL", "starttls": "STARTTLS", "none": "no TLS"}[security]
    return f"sent to {', '.join(recipients)} via {where} ({security_word})"


def _reason(exc: BaseException) -> str:
    return inline(str(exc) or type(exc).__name__)


def _smtp_reply(exc: Any) -> str:
    error = exc.smtp_error
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
    return inline(f"{exc.smtp_code} {text}")


def _deliver_sendmail(cfg: "Config", message: "EmailMessage") -> str:
    import subprocess

    command = list(cfg.get("notify.sendmail.command") or DEFAULT_SENDMAIL)
    if not command:
        raise EmailError("[notify.sendmail] command is empty")
    shown = " ".join(command)
    # [notify.sendmail] has no timeout key; a local MTA that takes over a minute to
    # queue one message is stuck, and cron must not hang on it forever.
    timeout = DEFAULT_TIMEOUT * 2
    try:
        done = subprocess.run(
            command,
            input=message.as_bytes(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise EmailError(
            f"sendmail command {command[0]} not found: install an MTA, set [notify.sendmail] "
            "command, or use [notify] transport = \"smtp\""
        ) from None
    except PermissionError:
        raise EmailError(f"sendmail command {command[0]} is not executable") from None
    except subprocess.TimeoutExpired:
        raise EmailError(f"sendmail command {shown!r} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise EmailError(f"cannot run sendmail command {shown!r}: {exc.strerror}") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = inline(lines[0]) if lines else "no error output"
        raise EmailError(f"sendmail command {shown!r} exited with status {done.returncode}: {detail}")
    return f"handed to {shown} for {message['To']}"


def _deliver_file(
    cfg: "Config", message: "EmailMessage", outbox: Optional[Path], name: Optional[str]
) -> str:
    configured = cfg.get("notify.file.dir")
    directory = cfg.resolve_relative(configured) if configured else outbox
    if directory is None:
        raise EmailError("[notify] transport is \"file\" but [notify.file] dir is not set")
    filename = name or f"message-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}.eml"
    target = directory / filename
    payload = message.as_bytes()
    tmp: Optional[str] = None
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".mail-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)  # a reader never sees half a message
        tmp = None
    except OSError as exc:
        raise EmailError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return f"written to {target}"


# -- the runner's entry point --------------------------------------------------------------


def run_filename(run_id: Optional[int]) -> str:
    return f"run-{run_id:06d}.eml" if run_id is not None else "run-unsaved.eml"


def should_send(cfg: "Config", report: RunReport) -> Optional[str]:
    """None when the report should be emailed, else why not (the skipped status text)."""
    if not cfg.emails:
        return "no notification addresses configured ([notify] emails): no report is sent"
    if report.trigger != "scheduled" and not cfg.get("notify.on_manual", False):
        return (
            f"{TRIGGER_WORDS.get(report.trigger, report.trigger)} run: no report is sent "
            "(set [notify] on_manual = true to email manual runs)"
        )
    return None


def send_report(
    cfg: "Config",
    report: RunReport,
    state: "State",
    *,
    force: bool = False,
    now: Optional[datetime] = None,
) -> None:
    """Render, deliver, and record ``sent`` / ``failed`` / ``skipped`` for ``report``.

    Call after the run is recorded (``report.run_id`` set). ``force`` sends even
    a manual run's report (``email resend``); no addresses is always skipped.
    Raises EmailError after recording the failure.
    """
    reason = None if force and cfg.emails else should_send(cfg, report)
    if reason is not None:
        _record(state, report, SKIPPED, reason)
        return
    recipients = cfg.emails
    try:
        rendered = render_for(cfg, report)
        message = build_message(
            rendered, recipients, sender=cfg.get("notify.from"), now=now, run_id=report.run_id
        )
        receipt = deliver(
            cfg, message, recipients, outbox=state.dir / OUTBOX_DIR, name=run_filename(report.run_id)
        )
    except EmailError as exc:
        _record(state, report, EMAIL_FAILED, exc.message)
        raise
    _record(state, report, SENT, receipt)


def _record(state: "State", report: RunReport, status: str, message: str) -> None:
    report.email_status = status
    report.email_message = message
    if report.run_id is not None:
        state.set_email(report.run_id, status, message)


def send_test(cfg: "Config", *, outbox: Optional[Path] = None, now: Optional[datetime] = None) -> str:
    """A short fixed message to every configured address; returns the receipt."""
    recipients = cfg.emails
    if not recipients:
        raise EmailError("no notification addresses configured: set [notify] emails")
    account = inline(cfg.get("account.name") or "") or "psabill"
    text = (
        f"This is a test message from psabill for {account}.\n\n"
        f"If you can read it, billing reports will reach {', '.join(recipients)}.\n"
    )
    import html as html_mod

    body = (
        "<!DOCTYPE html>\n<html><body><p>This is a test message from psabill for "
        f"<strong>{html_mod.escape(account)}</strong>.</p><p>If you can read it, billing reports "
        f"will reach {html_mod.escape(', '.join(recipients))}.</p></body></html>\n"
    )
    rendered = Rendered(subject=header_text(f"psabill test message ({account})"), text=text, html=body)
    message = build_message(rendered, recipients, sender=cfg.get("notify.from"), now=now)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return deliver(cfg, message, recipients, outbox=outbox, name=f"test-{stamp}.eml")


# -- filling in what the history does not store ----------------------------------------------


__all__ = [
    "Rendered",
    "build_message",
    "deliver",
    "inline",
    "render",
    "render_for",
    "send_report",
    "send_test",
    "should_send",
]
