"""Deliver a message: SMTP, a sendmail-compatible command, or a file.

Error messages are one line and never contain the SMTP password.

``[notify.smtp] timeout`` bounds the *whole* SMTP conversation, not each read:
a watchdog thread shuts the socket down at the deadline, so a server that
dribbles one byte a second cannot keep a run (and its run lock) waiting.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from psabill.errors import EmailError
from psabill.notify.facts import inline
from psabill.config.settings import NotifySettings, SmtpSettings

if TYPE_CHECKING:  # pragma: no cover - typing only
    from email.message import EmailMessage

DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
SENDMAIL_TIMEOUT = 60.0  # [notify.sendmail] has no timeout key; a stuck MTA must not hang cron


def smtp_password(smtp: SmtpSettings) -> Optional[str]:
    """The SMTP password from password_env, password_file or password (shared rules in
    :mod:`psabill.config.secrets`); a problem is an EmailError so the run result still stands."""
    from psabill.errors import ConfigError
    from psabill.config.secrets import resolve

    if not smtp.password.configured:
        return None
    try:
        return resolve(smtp.password)
    except ConfigError as exc:
        raise EmailError(exc.message) from None


def deliver(
    notify: NotifySettings,
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
    transport = notify.transport
    if transport == "smtp":
        password = smtp_password(notify.smtp)
        try:
            return _deliver_smtp(notify.smtp, message, recipients, password)
        except EmailError as exc:
            raise EmailError(redact(exc.message, password)) from None
    if transport == "sendmail":
        return _deliver_sendmail(notify.sendmail_command, message)
    if transport == "file":
        return _deliver_file(notify.file_dir or outbox, message, name)
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
    smtp: SmtpSettings, message: "EmailMessage", recipients: Sequence[str], password: Optional[str]
) -> str:
    import smtplib
    import socket
    import ssl
    import threading
    from email.utils import parseaddr

    host = smtp.host
    security = smtp.security
    port = smtp.port or DEFAULT_PORTS[security]
    timeout = smtp.timeout
    username = smtp.username
    where = f"SMTP server {host}:{port}"
    if username and not password:
        raise EmailError(
            f"[notify.smtp] username {username!r} has no password: set password_env, "
            "password_file or password"
        )

    tls: Optional[ssl.SSLContext] = None
    if security in ("ssl", "starttls"):
        ca_file = smtp.ca_file
        try:
            tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise EmailError(f"cannot load [notify.smtp] ca_file {ca_file}: {_reason(exc)}") from None

    envelope_from = parseaddr(str(message["From"]))[1]
    # Not connected yet: the watchdog must already run while the greeting is read.
    client = (smtplib.SMTP_SSL(timeout=timeout, context=tls) if security == "ssl"
              else smtplib.SMTP(timeout=timeout))
    client._host = host  # what SMTP(host, ...) would set: TLS checks the certificate against it
    expired = threading.Event()
    finished = threading.Event()

    def watch() -> None:
        if finished.wait(timeout):
            return
        expired.set()
        while not finished.is_set():  # the socket may appear only once a slow connect returns
            sock = getattr(client, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            finished.wait(0.1)

    watchdog = threading.Thread(target=watch, name="psabill-smtp-deadline", daemon=True)
    watchdog.start()
    try:
        return _converse(client, host, port, where, security, tls, username, password, message, envelope_from,
                         recipients, timeout)
    except EmailError:
        if expired.is_set():
            raise EmailError(f"{where} did not finish within {timeout:g}s in all "
                             "([notify.smtp] timeout bounds the whole conversation)") from None
        raise
    finally:
        finished.set()


def _converse(client: Any, host: str, port: int, where: str, security: str, tls: Any, username: Optional[str],
              password: Optional[str], message: "EmailMessage", envelope_from: str, recipients: Sequence[str],
              timeout: float) -> str:
    import smtplib
    import socket
    import ssl

    try:
        code, greeting = client.connect(host, port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, greeting)
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
        if client.sock is not None:
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


def _deliver_sendmail(configured: Sequence[str], message: "EmailMessage") -> str:
    import subprocess

    command = list(configured)
    if not command:
        raise EmailError("[notify.sendmail] command is empty")
    shown = " ".join(command)
    timeout = SENDMAIL_TIMEOUT
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


def _deliver_file(directory: Optional[Path], message: "EmailMessage", name: Optional[str]) -> str:
    from psabill.text.files import atomic_write

    if directory is None:
        raise EmailError("[notify] transport is \"file\" but [notify.file] dir is not set")
    filename = name or f"message-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}.eml"
    target = directory / filename
    # A reader never sees half a message.
    atomic_write(target, message.as_bytes(), error=EmailError, what="email file", prefix=".mail-")
    return f"written to {target}"
