"""The TOML config: find it, validate it once against the schema, and hand out typed sections.

Reading uses tomllib (tomli before 3.11). Every key is declared once in
:mod:`psabill.config.schema`; an unknown key, a wrong value or malformed TOML
is a :class:`~psabill.errors.ConfigError` naming the file, the key path and
the value (never the value of a secret, and a URL only with its password
masked). The validated document becomes :class:`Settings`: one typed section
per table, every default filled in, the schedule and the account zone decoded
once. Each layer is handed only the section it needs.

Writes live in :mod:`psabill.config.edit`; this module only reads.
"""

import os
import stat
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from psabill.clock import load_zone
from psabill.config import schema as schema_mod
from psabill.config.keys import Context, Problem, decode_section, validate_section
from psabill.config.schema import (
    SCHEMA,
    AccountSettings,
    GuardSettings,
    HistorySettings,
    LogSettings,
    MappingSettings,
    NotifySettings,
    PsaSettings,
    RunSettings,
    ScheduleSettings,
    Schema,
    SourceSettings,
    StateSettings,
    TopSettings,
)
from psabill.errors import ConfigError
from psabill.schedule.rules import Schedule, ScheduleError, parse_weekday
from psabill.text.files import check_private, read_regular

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.9 runs
    import tomli as tomllib

ENV_STATE_URL = "PSABILL_STATE_URL"
LATE_MARGIN = timedelta(hours=3)  # an occurrence may run this late (schedule.cronplan)


class Settings(NamedTuple):
    """The whole validated config, typed. ``exists`` is False for a missing file."""

    path: Path
    exists: bool = True
    top: TopSettings = TopSettings()
    account: AccountSettings = AccountSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    notify: NotifySettings = NotifySettings()
    source: SourceSettings = SourceSettings()
    products: Tuple[Tuple[str, str], ...] = ()
    mapping: MappingSettings = MappingSettings()
    psa: Optional[PsaSettings] = None  # None: no [psa] section
    guard: GuardSettings = GuardSettings()
    history: HistorySettings = HistorySettings()
    run: RunSettings = RunSettings()
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()
    when: Any = None  # the schedule (psabill.schedule.rules.Schedule), decoded once; None: none saved
    zone: Any = None  # the account zone (a ZoneInfo), decoded once; None: [account] timezone unset
    document: Mapping[str, Any] = MappingProxyType({})  # the validated TOML, for psabill.config.edit

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self)
                          if name not in ("document", "state"))
        return f"Settings({shown})"

    @property
    def product_map(self) -> Dict[str, str]:
        """SKU -> PSA product, as configured in [products]."""
        return dict(self.products)

    @property
    def guard_horizon(self) -> timedelta:
        """How far back the guard may look into the history: catch-up plus the 3 h an occurrence may run late."""
        return self.schedule.catch_up + LATE_MARGIN

    @property
    def state_url(self) -> Optional[str]:
        """``PSABILL_STATE_URL``, then ``[state] url``; None keeps SQLite in the state dir."""
        return os.environ.get(ENV_STATE_URL) or self.state.url

    @property
    def tenant(self) -> str:
        """The PSA tenant this config writes to: the same for every config and host that bills it."""
        psa = self.psa
        if psa is None:
            return ""
        return " ".join([psa.kind or "-", _identity_url(psa.url), psa.company or psa.username or "-"])

    @property
    def account_id(self) -> str:
        """This config's identity in the ledger: ``[account] id``, else the PSA it bills and the config path."""
        if self.account.id:
            return self.account.id
        # Plain text, not a hash (hashlib costs the not-due cron path 2 ms); a URL's userinfo and query
        # (where a password may be) are left out: the identity is stored in every ledger row as it is.
        psa = self.psa
        url = _identity_url(psa.url) if psa is not None else ""
        return " ".join([psa.kind or "-" if psa is not None else "-", url or "-",
                         (psa.company or psa.username or "-") if psa is not None else "-", str(self.path)])


def _identity_url(value: Optional[str]) -> str:
    """A PSA URL as an identity: lower case, without userinfo, query or fragment (a password can hide there)."""
    url = (value or "").strip().lower()
    url = url.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return scheme + sep + host.rpartition("@")[2] + slash + path if sep else url.rpartition("@")[2]


# path -> (the bytes last parsed, their settings). The file is read and its
# owner and mode checked on every load; unchanged bytes are not parsed again,
# so a due cron firing (the fast path, then the CLI) parses its config once.
_PARSED: Dict[Tuple[Path, int], Tuple[bytes, Settings]] = {}


def load(path: Path, *, check_addresses: bool = True, must_exist: bool = False, schema: Schema = SCHEMA) -> Settings:
    """Read, validate and type ``path``. A missing file is empty settings unless ``must_exist``.

    A config another user could have written, or one that is not a regular
    file, is refused before a byte of it is read (see
    :func:`psabill.text.files.check_private`).
    """
    check_private(path, "config", ConfigError)
    raw = read_regular(path, "config", ConfigError, missing_ok=True)
    if raw is None and must_exist:
        raise ConfigError(f"no config at {path}: run 'psabill config init' to write one")
    if raw is None:
        return from_document(path, {}, exists=False, schema=schema)
    cache_key = (path, id(schema))
    parsed = _PARSED.get(cache_key)
    if parsed is None or parsed[0] != raw:
        data = parse_document(raw, path)
        validate(data, path, schema)
        parsed = _PARSED[cache_key] = (raw, from_document(path, data, schema=schema))
    settings = parsed[1]
    _check_literal_secrets(settings, path)  # the file's mode, checked on every load
    if check_addresses and settings.notify.emails:
        from psabill.config.addresses import check_configured  # email-validator: not on the not-due cron path

        check_configured(settings)
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
    except RecursionError:  # arrays nested thousands deep: tomllib recurses once per level
        raise ConfigError(f"{path}: malformed TOML: nested too deeply to be a psabill config") from None


def validate(data: Mapping[str, Any], path: Path, schema: Schema = SCHEMA) -> None:
    """Raise ConfigError naming the first unknown key or bad value."""
    try:
        top = {k: v for k, v in data.items() if not isinstance(v, dict)}
        validate_section(schema.top, top, "")
        for name, table in data.items():
            if not isinstance(table, dict):
                continue
            section = getattr(schema, name, None) if name in schema._fields[1:] else None
            if section is None:
                raise Problem("", f"unknown section [{name}]")
            if isinstance(section, schema_mod.Table):
                for sku, value in table.items():
                    problem = section.check(value)
                    if problem:
                        raise Problem(f"{name}.{sku}", problem, repr(value) if not isinstance(value, dict) else None)
            else:
                validate_section(section, table, name)
    except Problem as exc:
        raise ConfigError(f"{path}: {_masked(str(exc))}") from None
    _check_retention(data, path, schema)


def _masked(text: str) -> str:
    """A problem text with any URL password in it masked (a [state] url value is shown)."""
    if "://" not in text and "password" not in text.lower():
        return text
    from psabill.text.redact import mask_url  # only when a URL is in the text

    return mask_url(text)


def _check_retention(data: Mapping[str, Any], path: Path, schema: Schema) -> None:
    """Pruning must never erase a run the guard could still need (catch-up + 3 h)."""
    history = data.get("history")
    if not isinstance(history, dict) or "retention_days" not in history:
        return
    sched = data.get("schedule") if isinstance(data.get("schedule"), dict) else {}
    catch_up = schema.schedule.KEYS["catch_up"]
    window = catch_up.decode(sched["catch_up"], None) if "catch_up" in sched else catch_up.default
    needed = window + LATE_MARGIN
    days = history["retention_days"]
    if timedelta(days=days) < needed:
        at_least = -(-needed // timedelta(days=1))
        raise ConfigError(f"{path}: history.retention_days = {days}: must cover [schedule] catch_up "
                          f"({sched.get('catch_up', '24h')}) + 3h, so at least {at_least}")


def from_document(path: Path, data: Mapping[str, Any], *, exists: bool = True, schema: Schema = SCHEMA) -> Settings:
    """Typed settings for a document that :func:`validate` accepted."""
    ctx = Context(path)

    def table(name: str) -> Mapping[str, Any]:
        value = data.get(name, {})
        return value if isinstance(value, dict) else {}

    sections: Dict[str, Any] = {}
    for name in schema._fields:
        section = getattr(schema, name)
        if name == "top":
            sections[name] = decode_section(section, {k: v for k, v in data.items() if not isinstance(v, dict)},
                                            ctx, "")
        elif isinstance(section, schema_mod.Table):
            sections[name] = tuple((str(k), str(v)) for k, v in table(name).items())
        elif name == "psa" and "psa" not in data:
            sections[name] = None
        else:
            sections[name] = decode_section(section, table(name), ctx, name)
    notify = sections["notify"]
    if notify.transport is None:  # smtp when [notify.smtp] is configured, else sendmail
        sections["notify"] = notify._replace(transport="smtp" if table("notify").get("smtp") else "sendmail")
    settings = Settings(path=path, exists=exists, document=data, **sections)
    if settings.account.timezone or settings.schedule.mode:
        settings = settings._replace(**_decoded_time(settings))
    if data:
        _register_url_passwords(settings)
    return settings


def _decoded_time(settings: Settings) -> Dict[str, Any]:
    """The account zone and the schedule, decoded once for every layer."""
    zone = load_zone(settings.account.timezone) if settings.account.timezone else None
    sched = settings.schedule
    if not sched.mode:
        return {"zone": zone}
    if zone is None:
        raise ConfigError(f"{settings.path}: [schedule] is set but [account] timezone is missing: "
                          "run 'psabill schedule set ... --timezone ZONE'")

    floor = max((m for m in (sched.saved_at, sched.enabled_at) if m is not None), default=None)
    try:
        when = Schedule(mode=sched.mode, hour=sched.hour, zone=zone,
                        day=sched.day if sched.mode == "monthly" else None,
                        weekday=parse_weekday(sched.weekday) if sched.mode == "weekly" and sched.weekday else None,
                        start=sched.start, saved_at=floor)
    except ScheduleError as exc:
        raise ConfigError(f"{settings.path}: [schedule] {exc}") from None
    return {"zone": zone, "when": when}


URL_KEYS = (("psa", "url"), ("state", "url"), ("notify", "ping_url"), ("notify", "history_url"),
            ("history", "site_url"), ("source", "url"))


def _register_url_passwords(settings: Settings) -> None:
    """A password in any configured URL is a secret: the redactor learns it before anything is printed."""
    urls = [getattr(getattr(settings, name), field, None) if getattr(settings, name) is not None else None
            for name, field in URL_KEYS]
    if settings.state_url and settings.state_url != settings.state.url:
        urls.append(settings.state_url)  # PSABILL_STATE_URL
    urls = [u for u in urls if isinstance(u, str) and ("@" in u or "password" in u.lower())]
    if urls:
        from psabill.text.redact import register_url  # only a URL that may carry a password needs it

        for url in urls:
            register_url(url)


def _check_literal_secrets(settings: Settings, path: Path) -> None:
    """A literal secret (or a URL password) in the file needs a config only its owner can read."""
    refs = [("notify.smtp.password", settings.notify.smtp.password), ("source.api_key", settings.source.api_key)]
    if settings.psa is not None:
        refs += [("psa.private_key", settings.psa.private_key), ("psa.secret", settings.psa.secret)]
    literal = [name for name, ref in refs if ref.literal is not None]
    if settings.state.url and _url_password(settings.state.url):
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


def _url_password(url: str) -> bool:
    from psabill.text.redact import url_passwords  # only a configured [state] url gets here

    return bool(url_passwords(url))


def utc_seconds(now: datetime) -> datetime:
    """``saved_at`` is stored to the second, in UTC."""
    return now.astimezone(timezone.utc).replace(microsecond=0)
