"""Deliver a message: SMTP, a sendmail-compatible command, or a file.

Error messages are one line and never contain the SMTP password.

``[notify.smtp] timeout`` bounds the *whole* SMTP conversation, not each read:
a watchdog thread shuts the socket down at the deadline, so a server that
dribbles one byte a second cannot keep a run (and its run lock) waiting.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import threading
from datetime import datetime, timezone
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from psabill.config.schema import SmtpSettings
from psabill.config.secrets import resolve
from psabill.errors import ConfigError, EmailError
from psabill.text import clean
from psabill.text.files import atomic_write, check_program, make_private_dir, read_ca

if TYPE_CHECKING:  # pragma: no cover - typing only
    from email.message import EmailMessage

    from psabill.config.settings import Settings

DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
SENDMAIL_TIMEOUT = 60.0  # [notify.sendmail] has no timeout key; a stuck MTA must not hang cron


def smtp_password(smtp: SmtpSettings) -> Optional[str]:
    """The SMTP password from password_env, password_file or password (shared rules in
    :mod:`psabill.config.secrets`); a problem is an EmailError so the run result still stands."""
    if not smtp.password.configured:
        return None
    try:
        return resolve(smtp.password)
    except ConfigError as exc:
        raise EmailError(exc.message) from None


def deliver(
    settings: "Settings",
    message: "EmailMessage",
    recipients: Sequence[str],
    *,
    outbox: Optional[Path] = None,
    name: Optional[str] = None,
    dry: bool = False,
) -> str:
    """Send ``message`` to every address in ``recipients`` (bare, de-duplicated); a one-line receipt.

    ``outbox`` is the file transport's directory when ``[notify.file] dir`` is
    unset; ``name`` is the file name it writes (the run id keeps one per run).
    With ``dry`` the path is tried as far as it goes without sending: SMTP up
    to the recipients (then RSET), the mailer's program checked, the file
    dir made. Raises EmailError (one line, password-free) on any failure.
    """
    notify = settings.notify
    if not recipients:
        raise EmailError("no recipients: set [notify] emails")
    transport = notify.transport
    if transport == "smtp":
        return _deliver_smtp(notify.smtp, message, recipients, smtp_password(notify.smtp), dry=dry)
    if transport == "sendmail":
        return _deliver_sendmail(notify.sendmail.command, message, settings.path.parent, dry=dry)
    if transport == "file":
        return _deliver_file(notify.file.dir or outbox, message, name, dry=dry)
    raise EmailError(f"[notify] transport {transport!r} is not smtp, sendmail or file")


def _deliver_smtp(
    smtp: SmtpSettings, message: "EmailMessage", recipients: Sequence[str], password: Optional[str], *,
    dry: bool = False,
) -> str:
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
        try:  # read without blocking: OpenSSL's own open of a FIFO would wait for a writer forever
            tls = ssl.create_default_context(cadata=read_ca(ca_file, "[notify.smtp] ca_file", EmailError)
                                             if ca_file else None)
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
                         recipients, timeout, dry)
    except EmailError:
        if expired.is_set():
            raise EmailError(f"{where} did not finish within {timeout:g}s in all "
                             "([notify.smtp] timeout bounds the whole conversation)") from None
        raise
    finally:
        finished.set()


def _converse(client: Any, host: str, port: int, where: str, security: str, tls: Any, username: Optional[str],
              password: Optional[str], message: "EmailMessage", envelope_from: str, recipients: Sequence[str],
              timeout: float, dry: bool = False) -> str:
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
        if dry:  # as far as the recipients, then nothing is sent
            code, reply = client.mail(envelope_from)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, envelope_from)
            for recipient in recipients:
                code, reply = client.rcpt(recipient)
                if code not in (250, 251):
                    raise EmailError(f"{where} refuses the recipient {recipient}: {code} "
                                     f"{reply.decode('utf-8', 'replace') if isinstance(reply, bytes) else reply}")
            client.rset()
            return f"{where} accepts the sender and {len(recipients)} recipient(s); nothing was sent"
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
        raise EmailError(f"cannot connect to {where}: {exc.strerror or _reason(exc)} "
                         "(check [notify.smtp] host and port, or set [notify] transport)") from None
    finally:
        if client.sock is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()  # the server already hung up; just drop the socket
    security_word = {"ssl": "SSL", "starttls": "STARTTLS", "none": "no TLS"}[security]
    return f"sent to {', '.join(recipients)} via {where} ({security_word})"


def _reason(exc: BaseException) -> str:
    return clean.message(str(exc) or type(exc).__name__)


def _smtp_reply(exc: Any) -> str:
    error = exc.smtp_error
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
    return clean.message(f"{exc.smtp_code} {text}")


def _deliver_sendmail(configured: Sequence[str], message: "EmailMessage", config_dir: Path, *,
                      dry: bool = False) -> str:
    """Run the mailer: its program passes the same ownership and mode check as every program psabill runs
    (:func:`psabill.text.files.check_program`); a relative program is relative to the config's directory."""
    command = check_program(list(configured), config_dir, "[notify.sendmail] command", EmailError)
    shown = " ".join(command)
    if dry:
        return f"{command[0]} would be handed the report (its program checked; nothing was sent)"
    timeout = SENDMAIL_TIMEOUT
    try:
        done = subprocess.run(
            command,
            input=message.as_bytes(),
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=str(config_dir),
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
        detail = clean.message(lines[0]) if lines else "no error output"
        raise EmailError(f"sendmail command {shown!r} exited with status {done.returncode}: {detail}")
    return f"handed to {shown} for {message['To']}"


def _deliver_file(directory: Optional[Path], message: "EmailMessage", name: Optional[str], *,
                  dry: bool = False) -> str:
    if directory is None:
        raise EmailError("[notify] transport is \"file\" but [notify.file] dir is not set")
    if dry:
        make_private_dir(directory, EmailError, "[notify.file] dir")
        return f"would write the report to {directory}"
    filename = name or f"message-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}.eml"
    target = directory / filename
    # A reader never sees half a message.
    atomic_write(target, message.as_bytes(), error=EmailError, what="email file", prefix=".mail-")
    return f"written to {target}"
