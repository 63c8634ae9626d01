"""The TOML config: find it, validate it once, and hand out typed sections.

Reading uses tomllib (tomli before 3.11). Every key of every section is
declared in :data:`SCHEMA`, so an unknown key or a wrong value is caught at load
time with a one-line error naming the file, the key path and the value. The
validated document is then turned into immutable typed records
(:class:`Settings` and its sections, ``typing.NamedTuple``) that hold every
default in one place; each layer is handed only the section it needs, and no
module below the CLI reads a dotted key. They are NamedTuples rather than frozen
dataclasses because the not-due cron path loads them on every firing, and
building eight frozen dataclasses costs more than the rest of that path's own
code (see ``benchmarks/``).

Writes: :func:`prospective` builds (and validates) the new document, and
:func:`write` saves it. A config that exists is edited in place with tomlkit:
only the keys whose values changed are touched, so every comment, the key
order and the formatting the admin chose survive (tomllib stays the reader and
validator). A new config is written whole. The file is replaced atomically,
through a symlink to its target (see :mod:`psabill.text.files`); callers that load,
plan and write hold :func:`psabill.ledger.lock.config_lock` around all of it.
"""


import math
import stat
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from psabill.errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.9 smoke run
    import tomli as tomllib

VERSION = 1
DEFAULT_SENDMAIL = ("/usr/sbin/sendmail", "-t", "-oi")  # [notify.sendmail] command

Check = Callable[[Any], Optional[str]]  # returns an error text, or None when fine


def _type(*types: type) -> Check:
    names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)

    def check(value: Any) -> Optional[str]:
        if isinstance(value, bool) and bool not in types:
            return f"expected {names}"
        return None if isinstance(value, types) else f"expected {names}"

    return check


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
               float: "a number", date: "a date", datetime: "a date-time"}


def _all(*checks: Check) -> Check:
    def check(value: Any) -> Optional[str]:
        for c in checks:
            problem = c(value)
            if problem:
                return problem
        return None

    return check


def _choice(*options: str) -> Check:
    def check(value: Any) -> Optional[str]:
        if value not in options:
            return "expected one of " + ", ".join(repr(o) for o in options)
        return None

    return check


def _range(lo: int, hi: int) -> Check:
    def check(value: Any) -> Optional[str]:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"expected an integer {lo}-{hi}"
        return None

    return check


def _str_list(value: Any) -> Optional[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "expected a list of strings"
    return None


def _day(value: Any) -> Optional[str]:
    if value == "last" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 31):
        return None
    return "expected 1-31 or \"last\""


def _weekday(value: Any) -> Optional[str]:
    from psabill.schedule.rules import ScheduleError, parse_weekday

    if not isinstance(value, str):
        return "expected a weekday name such as \"tue\""
    try:
        parse_weekday(value)
    except ScheduleError:
        return "expected a weekday name such as \"tue\""
    return None


def _duration(value: Any) -> Optional[str]:
    try:
        parse_duration(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_catch_up(value: Any) -> Optional[str]:
    """A catch-up window shorter than the 3 h an occurrence may run late would lose it."""
    problem = _duration(value)
    if problem is None and parse_duration(value) < timedelta(hours=3):
        problem = "must be at least 3h (an occurrence can run up to 3 hours late)"
    return problem


def _zone(value: Any) -> Optional[str]:
    from psabill.clock import fixed_offset_problem, load_zone, suggest_zone

    if not isinstance(value, str):
        return "expected an IANA zone name"
    try:
        load_zone(value)
    except UsageError:
        guess = suggest_zone(value)
        return f"unknown time zone ({'did you mean ' + guess + '?' if guess else 'use an IANA name such as America/New_York'})"
    return fixed_offset_problem(value)


def _aware(value: Any) -> Optional[str]:
    if not isinstance(value, datetime) or value.tzinfo is None:
        return "expected a date-time with an offset"
    return None


EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)  # far enough for any schedule, near enough that every date sum stays in range


def check_date(value: Any) -> Optional[str]:
    """A date (or date-time) psabill can compute with: 1970-01-01 to 2999-12-31."""
    if not isinstance(value, date):
        return "expected a date"
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST <= day <= LATEST:
        return f"expected a date from {EARLIEST} to {LATEST}"
    return None


def _no_newline(value: Any) -> Optional[str]:
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return "must not contain a line break"
    return None


def _seconds(lo: float, hi: float) -> Check:
    def check(value: Any) -> Optional[str]:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not lo <= value <= hi):
            return f"expected a number of seconds from {lo:g} to {hi:g}"
        return None

    return check


STR = _all(_type(str), _no_newline)
INT = _type(int)
BOOL = _type(bool)
POSITIVE = _range(1, 1_000_000)

ANY_STR_KEYS = "*"  # a section whose keys are free-form (e.g. [products])

def _url_password(url: str) -> Optional[str]:
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
        return parts.password or dict(parse_qsl(parts.query)).get("password")
    except ValueError:
        return None


def _state_url(value: Any) -> Optional[str]:
    problem = STR(value)
    if problem:
        return problem
    if value and not str(value).startswith(("postgresql://", "postgres://")):
        return "expected a postgresql:// URL (or nothing, for SQLite in the state dir)"
    return None


SCHEMA: Dict[str, Dict[str, Any]] = {
    "": {"version": _range(1, VERSION)},
    "account": {"name": STR, "timezone": _zone},
    "schedule": {
        "enabled": BOOL,
        "mode": _choice("monthly", "weekly", "daily"),
        "day": _day,
        "weekday": _weekday,
        "hour": _range(0, 23),
        "start": _all(_type(date), check_date),
        "saved_at": _all(_aware, check_date),
        "enabled_at": _all(_aware, check_date),
        "catch_up": check_catch_up,
    },
    "notify": {
        "emails": _str_list,
        "on_manual": BOOL,
        "transport": _choice("smtp", "sendmail", "file"),
        "from": STR,
        "template_dir": STR,
        "history_url": STR,
        "ping_url": STR,
        "smtp": {
            "host": STR,
            "port": _range(1, 65535),
            "security": _choice("starttls", "ssl", "none"),
            "username": STR,
            "password": STR,
            "password_env": STR,
            "password_file": STR,
            "timeout": _seconds(0.1, 3600),
            "ca_file": STR,
        },
        "sendmail": {"command": _str_list},
        "file": {"dir": STR},
    },
    "source": {
        "kind": _choice("csv", "json", "command"),
        "path": STR,
        "command": _str_list,
        "format": _choice("csv", "json"),
        "timeout": _seconds(0.1, 86400),
    },
    "products": ANY_STR_KEYS,
    "mapping": {"file": STR},
    "psa": {
        "kind": _choice("connectwise", "autotask"),
        "url": STR,
        "company": STR,
        "public_key": STR,
        "private_key": STR,
        "private_key_env": STR,
        "private_key_file": STR,
        "client_id": STR,
        "api_version": STR,
        "username": STR,
        "secret": STR,
        "secret_env": STR,
        "secret_file": STR,
        "integration_code": STR,
        "concurrency": _range(1, 64),
        "timeout": _seconds(0.1, 3600),
        "max_retries": _range(0, 20),
        "ca_file": STR,
    },
    "history": {"retention_days": POSITIVE},
    "run": {"lock_timeout": _duration},
    "state": {"url": _state_url},
    "log": {"max_bytes": POSITIVE, "backups": _range(0, 100)},
}

# Keys whose values are credentials: never printed, and refused as literals in a
# config that group or others can read.
SECRET_KEYS = {("psa", "private_key"), ("psa", "secret"), ("notify.smtp", "password")}

DEFAULT_CATCH_UP = "24h"
DEFAULT_LOCK_TIMEOUT = "10m"
DEFAULT_RETENTION_DAYS = 400  # LastPass keeps 60 days; a year and a bit serves audits
MAX_DURATION_DAYS = 366


# Shown redacted in every message: the URL may carry the database password.
REDACTED_KEYS = {"state.url"}


def parse_duration(value: Any) -> timedelta:
    """``"24h"``, ``"90m"``, ``"2d"``, ``"30s"`` -> timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if isinstance(value, str):
        text = value.strip().lower()
        if 2 <= len(text) <= 12 and text[-1] in units and text[:-1].isdecimal() and text[:-1].isascii():
            seconds = int(text[:-1]) * units[text[-1]]
            if seconds > MAX_DURATION_DAYS * 86400:
                raise ValueError(f"expected a duration of at most {MAX_DURATION_DAYS}d")
            return timedelta(seconds=seconds)
    raise ValueError("expected a duration such as \"24h\", \"90m\" or \"2d\"")


def validate(data: Mapping[str, Any], path: Path) -> None:
    """Raise ConfigError naming the first unknown key or bad value."""
    for key, value in data.items():
        if isinstance(value, dict):
            _validate_section(key, value, SCHEMA.get(key), path)
        else:
            spec = SCHEMA[""].get(key)
            if spec is None:
                raise ConfigError(f"{path}: unknown key {key!r}")
            _check(spec, value, key, path)
    _check_retention(data, path)


def _check_retention(data: Mapping[str, Any], path: Path) -> None:
    """Pruning must never erase a run the guard could still need (catch-up + 3 h)."""
    history = data.get("history")
    if not isinstance(history, dict) or "retention_days" not in history:
        return
    schedule = data.get("schedule") if isinstance(data.get("schedule"), dict) else {}
    catch_up = parse_duration(schedule.get("catch_up", DEFAULT_CATCH_UP))
    needed = guard_horizon(catch_up)
    days = history["retention_days"]
    if timedelta(days=days) < needed:
        at_least = math.ceil(needed / timedelta(days=1))
        raise ConfigError(
            f"{path}: history.retention_days = {days}: must cover [schedule] catch_up "
            f"({schedule.get('catch_up', DEFAULT_CATCH_UP)}) + 3h, so at least {at_least}"
        )


def guard_horizon(catch_up: timedelta) -> timedelta:
    """How far back the guard may look into the history: catch-up plus the 3 h an occurrence may run late."""
    return catch_up + timedelta(hours=3)


def _validate_section(name: str, table: Mapping[str, Any], spec: Any, path: Path) -> None:
    if spec is None:
        raise ConfigError(f"{path}: unknown section [{name}]")
    if spec == ANY_STR_KEYS:
        for key, value in table.items():
            if name == "products" and isinstance(value, int) and not isinstance(value, bool):
                continue  # an Autotask service id; kept as a string in Settings.products
            _check(STR, value, f"{name}.{key}", path)
        return
    for key, value in table.items():
        sub = spec.get(key)
        if sub is None:
            raise ConfigError(f"{path}: unknown key {key!r} in [{name}]")
        if isinstance(sub, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {name}.{key} = {_show(value)}: expected a table")
            _validate_section(f"{name}.{key}", value, sub, path)
        else:
            _check(sub, value, f"{name}.{key}", path)


def _show(value: Any) -> str:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return repr(value)


def _check(check: Check, value: Any, where: str, path: Path) -> None:
    problem = check(value)
    if problem:
        if where in REDACTED_KEYS and isinstance(value, str):
            from psabill.ledger.dialect import redact

            raise ConfigError(f"{path}: {where} = {redact(value)!r}: {problem}")
        raise ConfigError(f"{path}: {where} = {_show(value)}: {problem}")


def _check_literal_secrets(data: Mapping[str, Any], path: Path) -> None:
    literal = []
    for section, key in SECRET_KEYS:
        node: Any = data
        for part in section.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and key in node:
            literal.append(f"{section}.{key}")
    url = data.get("state", {}).get("url") if isinstance(data.get("state"), dict) else None
    if isinstance(url, str) and _url_password(url):
        literal.append("state.url (its password)")
    if not literal:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} holds a literal secret ({', '.join(sorted(literal))}) but is readable by "
            f"group or others: run 'chmod 600 {path}' (or use *_env / *_file)"
        )




# -- typed sections ------------------------------------------------------------


class SecretRef(NamedTuple):
    """Where a credential comes from: exactly one of a literal, a variable or a file."""

    where: str  # "[psa]" or "[notify.smtp]", for messages
    key: str  # "private_key", "secret", "password"
    literal: Optional[str] = None
    env: Optional[str] = None
    file: Optional[Path] = None
    conflict: Tuple[str, ...] = ()  # more than one form given: refused when resolved

    def __repr__(self) -> str:
        literal = None if self.literal is None else "***"
        return (f"SecretRef(where={self.where!r}, key={self.key!r}, literal={literal!r}, env={self.env!r}, "
                f"file={self.file!r}, conflict={self.conflict!r})")

    @property
    def configured(self) -> bool:
        """Whether any form is given."""
        return self.literal is not None or self.env is not None or self.file is not None


class AccountSettings(NamedTuple):
    name: str = ""
    timezone: Optional[str] = None


class ScheduleSettings(NamedTuple):
    mode: Optional[str] = None  # None: no schedule saved
    enabled: bool = True
    hour: int = 0
    day: Any = None  # 1..31 or "last" (monthly)
    weekday: Optional[str] = None  # "mon".."sun" (weekly)
    start: Optional[date] = None
    saved_at: Optional[datetime] = None
    enabled_at: Optional[datetime] = None  # the latest `schedule enable`; nothing before it runs
    catch_up_text: str = DEFAULT_CATCH_UP

    @property
    def catch_up(self) -> timedelta:
        """How late an occurrence may still run."""
        return parse_duration(self.catch_up_text)


class SmtpSettings(NamedTuple):
    host: str = "localhost"
    port: Optional[int] = None
    security: str = "starttls"
    username: Optional[str] = None
    password: SecretRef = SecretRef("[notify.smtp]", "password")
    timeout: float = 30.0
    ca_file: Optional[Path] = None


class NotifySettings(NamedTuple):
    emails: Tuple[str, ...] = ()
    on_manual: bool = False
    transport: str = "sendmail"
    sender: Optional[str] = None
    template_dir: Optional[Path] = None
    history_url: Optional[str] = None
    ping_url: Optional[str] = None  # healthchecks.io / cronitor style: <url>/start, <url>, <url>/fail
    smtp: SmtpSettings = SmtpSettings()
    sendmail_command: Tuple[str, ...] = DEFAULT_SENDMAIL
    file_dir: Optional[Path] = None


class SourceSettings(NamedTuple):
    kind: Optional[str] = None
    path: Optional[Path] = None
    command: Tuple[str, ...] = ()
    format: Optional[str] = None
    timeout: float = 120.0
    workdir: Path = Path(".")


class PsaSettings(NamedTuple):
    kind: Optional[str] = None
    url: Optional[str] = None
    company: Optional[str] = None
    public_key: Optional[str] = None
    client_id: Optional[str] = None
    api_version: Optional[str] = None
    username: Optional[str] = None
    integration_code: Optional[str] = None
    credential: SecretRef = SecretRef("[psa]", "private_key")  # private_key (ConnectWise) / secret (Autotask)
    concurrency: int = 8
    timeout: float = 30.0
    max_retries: int = 5
    ca_file: Optional[Path] = None


class Settings(NamedTuple):
    """The whole validated config, typed. ``exists`` is False for a missing file."""

    path: Path
    exists: bool = True
    account: AccountSettings = AccountSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    notify: NotifySettings = NotifySettings()
    source: SourceSettings = SourceSettings()
    products: Tuple[Tuple[str, str], ...] = ()
    mapping_file: Optional[Path] = None
    psa: Optional[PsaSettings] = None  # None: no [psa] section
    retention_days: int = DEFAULT_RETENTION_DAYS
    lock_timeout: float = 600.0
    state_url: Optional[str] = None  # not in repr: [state] url: a shared PostgreSQL ledger; None: SQLite in the state dir
    log_max_bytes: int = 1_000_000
    log_backups: int = 5
    document: Mapping[str, Any] = MappingProxyType({})  # the validated TOML, for the CLI's edits; not in repr

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self)
                          if name not in ("state_url", "document"))
        return f"Settings({shown})"

    @property
    def guard_horizon(self) -> timedelta:
        """The history the guard may still need; pruning never goes closer than this."""
        return guard_horizon(self.schedule.catch_up)

    @property
    def product_map(self) -> Dict[str, str]:
        """SKU -> PSA product, as configured in [products]."""
        return dict(self.products)


def resolve_relative(config_path: Path, value: str) -> Path:
    """Paths in the config are relative to the config file's directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else config_path.parent / path


def _secret(table: Mapping[str, Any], where: str, key: str, config_path: Path) -> SecretRef:
    given = tuple(name for name in (key, f"{key}_env", f"{key}_file") if table.get(name) not in (None, ""))
    return SecretRef(
        where=f"{config_path}: {where}", key=key,
        literal=str(table[key]) if key in given else None,
        env=str(table[f"{key}_env"]) if f"{key}_env" in given else None,
        file=resolve_relative(config_path, str(table[f"{key}_file"])) if f"{key}_file" in given else None,
        conflict=given if len(given) > 1 else (),
    )


def from_document(path: Path, data: Mapping[str, Any], *, exists: bool = True) -> Settings:
    """Typed settings for a document that :func:`validate` accepted."""

    def table(name: str) -> Mapping[str, Any]:
        value = data.get(name, {})
        return value if isinstance(value, dict) else {}

    def rel(value: Optional[str]) -> Optional[Path]:
        return resolve_relative(path, value) if value else None

    account, sched, notify, source, psa = (table(n) for n in ("account", "schedule", "notify", "source", "psa"))
    smtp = notify.get("smtp", {}) or {}
    return Settings(
        path=path,
        exists=exists,
        account=AccountSettings(name=str(account.get("name") or ""), timezone=account.get("timezone")),
        schedule=ScheduleSettings(
            mode=sched.get("mode"), enabled=bool(sched.get("enabled", True)), hour=int(sched.get("hour", 0)),
            day=sched.get("day"), weekday=sched.get("weekday"), start=sched.get("start"),
            saved_at=sched.get("saved_at"), enabled_at=sched.get("enabled_at"),
            catch_up_text=str(sched.get("catch_up", DEFAULT_CATCH_UP)),
        ),
        notify=NotifySettings(
            emails=tuple(notify.get("emails", ())),
            on_manual=bool(notify.get("on_manual", False)),
            transport=str(notify.get("transport") or ("smtp" if smtp else "sendmail")),
            sender=notify.get("from"),
            template_dir=rel(notify.get("template_dir")),
            history_url=notify.get("history_url"),
            ping_url=notify.get("ping_url") or None,
            smtp=SmtpSettings(
                host=str(smtp.get("host", "localhost")), port=smtp.get("port"),
                security=str(smtp.get("security", "starttls")), username=smtp.get("username"),
                password=_secret(smtp, "[notify.smtp]", "password", path),
                timeout=float(smtp.get("timeout", 30.0)), ca_file=rel(smtp.get("ca_file")),
            ),
            sendmail_command=tuple((notify.get("sendmail", {}) or {}).get("command") or DEFAULT_SENDMAIL),
            file_dir=rel((notify.get("file", {}) or {}).get("dir")),
        ),
        source=SourceSettings(
            kind=source.get("kind"), path=rel(source.get("path")), command=tuple(source.get("command") or ()),
            format=source.get("format"), timeout=float(source.get("timeout", 120.0)), workdir=path.parent,
        ),
        products=tuple((str(k), str(v)) for k, v in table("products").items()),
        mapping_file=rel(table("mapping").get("file")),
        psa=None if not psa else PsaSettings(
            kind=psa.get("kind"), url=psa.get("url"), company=psa.get("company"),
            public_key=psa.get("public_key"), client_id=psa.get("client_id"), api_version=psa.get("api_version"),
            username=psa.get("username"), integration_code=psa.get("integration_code"),
            credential=_secret(psa, "[psa]", "secret" if psa.get("kind") == "autotask" else "private_key", path),
            concurrency=int(psa.get("concurrency", 8)), timeout=float(psa.get("timeout", 30.0)),
            max_retries=int(psa.get("max_retries", 5)), ca_file=rel(psa.get("ca_file")),
        ),
        retention_days=int(table("history").get("retention_days", DEFAULT_RETENTION_DAYS)),
        lock_timeout=parse_duration(table("run").get("lock_timeout", DEFAULT_LOCK_TIMEOUT)).total_seconds(),
        state_url=str(table("state").get("url") or "") or None,
        log_max_bytes=int(table("log").get("max_bytes", 1_000_000)),
        log_backups=int(table("log").get("backups", 5)),
        document=data,
    )


# path -> (the bytes last parsed, their settings). The file is read and its
# owner and mode checked on every load; unchanged bytes are not parsed again,
# so a due cron firing (the fast path, then the CLI) parses its config once.
_PARSED: Dict[Path, Tuple[bytes, Settings]] = {}


def load(path: Path, *, check_addresses: bool = True, must_exist: bool = False) -> Settings:
    """Read, validate and type ``path``. A missing file is empty settings unless ``must_exist``.

    A config another user could have written is refused before it is parsed
    (see :func:`psabill.text.files.check_private`)."""
    from psabill.text.files import check_private

    check_private(path, "config", ConfigError)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"no config at {path}: run 'psabill schedule set' first") from None
        return from_document(path, {}, exists=False)
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    parsed = _PARSED.get(path)
    if parsed is None or parsed[0] != raw:
        data = parse_document(raw, path)
        validate(data, path)
        parsed = _PARSED[path] = (raw, from_document(path, data))
    settings = parsed[1]
    _check_literal_secrets(settings.document, path)  # the file's mode, checked on every load
    if check_addresses and settings.notify.emails:
        from psabill.config.addresses import validate_addresses

        try:
            validate_addresses(list(settings.notify.emails))
        except UsageError as exc:
            raise ConfigError(f"{path}: [notify] emails: {exc.message}") from None
    return settings



def parse_document(raw: bytes, path: Path) -> Dict[str, Any]:
    """Decode and parse TOML bytes, with one-line errors naming the file."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(f"{path}: starts with a UTF-8 byte-order mark (BOM): save it as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None


def prospective(settings: Settings, changes: Mapping[str, Optional[Mapping[str, Any]]]) -> Settings:
    """The settings with whole top-level sections replaced (``None`` drops one), validated; nothing is written."""
    document: Dict[str, Any] = dict(settings.document)
    for name, section in changes.items():
        if section is None:
            document.pop(name, None)
        else:
            document[name] = dict(section)
    validate(document, settings.path)
    return from_document(settings.path, document)


def write(settings: Settings) -> None:
    """Save ``settings`` (as :func:`prospective` built them) to their path, keeping the admin's bytes."""
    try:
        raw = settings.path.read_bytes()
    except FileNotFoundError:
        save(settings.path, settings.document)
        return
    except OSError as exc:
        raise ConfigError(f"cannot read config {settings.path}: {exc.strerror}") from None
    from psabill.text.files import atomic_write

    text = edit(raw.decode("utf-8"), settings.document)
    parse_document(text.encode("utf-8"), settings.path)  # what we write must read back
    atomic_write(settings.path, text.encode("utf-8"), error=ConfigError, what="config", prefix=".config-")


def edit(text: str, document: Mapping[str, Any]) -> str:
    """``text`` changed to hold ``document``: only keys whose values differ are touched."""
    import tomlkit

    doc = tomlkit.parse(text)
    wanted = dict(document)
    if "version" not in doc:
        wanted.pop("version", None)
    _merge(doc, wanted)
    return tomlkit.dumps(doc)


def _merge(target: Any, wanted: Mapping[str, Any]) -> None:
    for key in [k for k in target.keys() if k not in wanted]:
        del target[key]
    for key, value in wanted.items():
        if key in target:
            current = target[key]
            if isinstance(value, dict) and isinstance(current, dict):
                _merge(current, value)
                continue
            plain = current.unwrap() if hasattr(current, "unwrap") else current
            if plain == value and type(plain) is type(value):
                continue
        target[key] = value


def section_of(settings: Settings, name: str) -> Dict[str, Any]:
    """A copy of one top-level section of the document, for :func:`update` to replace."""
    value = settings.document.get(name, {})
    return dict(value) if isinstance(value, dict) else {}


def save(path: Path, document: Mapping[str, Any]) -> None:
    """Atomically replace ``path`` with ``document`` (mode 0600, fsynced)."""
    import tomli_w

    from psabill.text.files import atomic_write

    versioned = {"version": VERSION, **{k: v for k, v in document.items() if k != "version"}}
    ordered = {**{k: v for k, v in versioned.items() if not isinstance(v, dict)},
               **{k: v for k, v in versioned.items() if isinstance(v, dict)}}
    atomic_write(path, tomli_w.dumps(ordered).encode("utf-8"), error=ConfigError, what="config", prefix=".config-")


def utc_now_seconds(now: datetime) -> datetime:
    """``saved_at`` is stored to the second, in UTC."""
    return now.astimezone(timezone.utc).replace(microsecond=0)
