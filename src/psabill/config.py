"""The TOML config: finding, validating and atomically rewriting it.

Reading uses tomllib (tomli before 3.11); writing uses tomli-w. Every key of
every section is declared in :data:`SCHEMA`, so an unknown key or a wrong value
is caught at load time with a one-line error naming the file, the key path and
the value. Writes go to a temp file in the same directory, are fsynced, then
renamed over the old file: a reader (or a crash) sees the old file or the new
one, never half of either.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from psabill.errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.9 smoke run
    import tomli as tomllib

VERSION = 1
ENV_CONFIG = "PSABILL_CONFIG"

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
    from psabill.schedule import ScheduleError, parse_weekday

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
    from psabill.clock import load_zone

    if not isinstance(value, str):
        return "expected an IANA zone name"
    try:
        load_zone(value)
    except UsageError:
        return "unknown time zone (use an IANA name such as America/New_York)"
    return None


def _aware(value: Any) -> Optional[str]:
    if not isinstance(value, datetime) or value.tzinfo is None:
        return "expected a date-time with an offset"
    return None


def _no_newline(value: Any) -> Optional[str]:
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return "must not contain a line break"
    return None


STR = _all(_type(str), _no_newline)
INT = _type(int)
BOOL = _type(bool)
POSITIVE = _range(1, 1_000_000)

ANY_STR_KEYS = "*"  # a section whose keys are free-form (e.g. [products])

SCHEMA: Dict[str, Dict[str, Any]] = {
    "": {"version": _range(1, VERSION)},
    "account": {"name": STR, "timezone": _zone},
    "schedule": {
        "enabled": BOOL,
        "mode": _choice("monthly", "weekly", "daily"),
        "day": _day,
        "weekday": _weekday,
        "hour": _range(0, 23),
        "start": _type(date),
        "saved_at": _aware,
        "catch_up": check_catch_up,
    },
    "notify": {
        "emails": _str_list,
        "on_manual": BOOL,
        "transport": _choice("smtp", "sendmail", "file"),
        "from": STR,
        "template_dir": STR,
        "history_url": STR,
        "smtp": {
            "host": STR,
            "port": _range(1, 65535),
            "security": _choice("starttls", "ssl", "none"),
            "username": STR,
            "password": STR,
            "password_env": STR,
            "password_file": STR,
            "timeout": _type(int, float),
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
        "timeout": _type(int, float),
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
        "timeout": _type(int, float),
        "max_retries": _range(0, 20),
        "ca_file": STR,
    },
    "history": {"retention_days": POSITIVE},
    "run": {"lock_timeout": _duration},
    "log": {"max_bytes": POSITIVE, "backups": _range(0, 100)},
}

# Keys whose values are credentials: never printed, and refused as literals in a
# config that group or others can read.
SECRET_KEYS = {("psa", "private_key"), ("psa", "secret"), ("notify.smtp", "password")}

DEFAULT_CATCH_UP = "24h"


def parse_duration(value: Any) -> timedelta:
    """``"24h"``, ``"90m"``, ``"2d"``, ``"30s"`` -> timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if isinstance(value, str):
        text = value.strip().lower()
        if len(text) >= 2 and text[-1] in units and text[:-1].isdigit():
            return timedelta(seconds=int(text[:-1]) * units[text[-1]])
    raise ValueError("expected a duration such as \"24h\", \"90m\" or \"2d\"")


def default_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("psabill")) / "config.toml"


def resolve_path(option: Optional[str] = None) -> Path:
    """``--config``, then ``PSABILL_CONFIG``, then the platformdirs user config dir."""
    chosen = option or os.environ.get(ENV_CONFIG)
    path = Path(chosen).expanduser() if chosen else default_path()
    return Path(os.path.abspath(path))


@dataclass
class Config:
    """A validated config. ``data`` is the raw TOML document."""

    path: Path
    data: Dict[str, Any] = field(default_factory=dict)
    exists: bool = True

    def section(self, name: str) -> Dict[str, Any]:
        value = self.data.get(name, {})
        return value if isinstance(value, dict) else {}

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def emails(self) -> List[str]:
        return list(self.get("notify.emails", []))

    @property
    def catch_up(self) -> timedelta:
        return parse_duration(self.get("schedule.catch_up", DEFAULT_CATCH_UP))

    def resolve_relative(self, value: str) -> Path:
        """Paths in the config are relative to the config file's directory."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.path.parent / path


def load(path: Path, *, check_addresses: bool = True, must_exist: bool = False) -> Config:
    """Read and validate ``path``. A missing file is an empty config unless ``must_exist``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"no config at {path}: run 'psabill schedule set' first") from None
        return Config(path, {}, exists=False)
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    validate(data, path)
    _check_literal_secrets(data, path)
    if check_addresses:
        from psabill.addresses import validate_addresses

        emails = data.get("notify", {}).get("emails")
        if emails:
            try:
                validate_addresses(emails)
            except UsageError as exc:
                raise ConfigError(f"{path}: [notify] emails: {exc.message}") from None
    return Config(path, data)


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


def _validate_section(name: str, table: Mapping[str, Any], spec: Any, path: Path) -> None:
    if spec is None:
        raise ConfigError(f"{path}: unknown section [{name}]")
    if spec == ANY_STR_KEYS:
        for key, value in table.items():
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
        raise ConfigError(f"{path}: {where} = {_show(value)}: {problem}")


def _check_literal_secrets(data: Mapping[str, Any], path: Path) -> None:
    literal = []
    for section, key in SECRET_KEYS:
        node: Any = data
        for part in section.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and key in node:
            literal.append(f"{section}.{key}")
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


def save(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically replace ``path`` with ``data`` (mode 0600, fsynced)."""
    import tomli_w

    document = {"version": VERSION, **{k: v for k, v in data.items() if k != "version"}}
    payload = tomli_w.dumps(_ordered(document)).encode("utf-8")
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write config {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"cannot write config {path}: {exc.strerror}") from None


def _ordered(document: Mapping[str, Any]) -> Dict[str, Any]:
    """Scalars first (tomli-w requires nothing, but it reads better), then sections."""
    scalars = {k: v for k, v in document.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in document.items() if isinstance(v, dict)}
    return {**scalars, **tables}


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def utc_now_seconds(now: datetime) -> datetime:
    """``saved_at`` is stored to the second, in UTC."""
    return now.astimezone(timezone.utc).replace(microsecond=0)
