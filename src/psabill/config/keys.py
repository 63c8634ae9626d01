"""How a config key is declared, checked and decoded: the machinery under :mod:`psabill.config.schema`.

A key is declared once, as the default of a field in a section's NamedTuple::

    @section("psa")
    class PsaSettings(NamedTuple):
        timeout: float = key(seconds(0.1, 3600), 30.0, type="seconds", meaning="PSA request timeout.",
                             example="30")

:func:`section` reads those declarations into ``PsaSettings.KEYS`` and puts the
real defaults in their place, so ``PsaSettings()`` is the section with every
default and ``settings.psa.timeout`` is a float. The check, the default, the
type and meaning shown in the reference, the example and the ``config init``
starter all come from that one :class:`Key`: the typed settings, ``psabill
config reference``, the README's reference table and ``config init`` are made
from it.

A check returns the problem in words (``"expected an integer 1-64"``) or None;
a decode turns the TOML value into the typed one (a duration into seconds, a
relative path into an absolute one). A secret key is three TOML keys (``x``,
``x_env``, ``x_file``) and one field, a :class:`SecretRef`; a problem with a
secret never shows its value.

NamedTuples, not dataclasses: the not-due cron path loads the settings on every
firing, and building frozen dataclasses costs more than the rest of that path.
"""

import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Type, TypeVar

Check = Callable[[Any], Optional[str]]  # returns the problem in words, or None when fine
T = TypeVar("T")


class Starter(NamedTuple):
    """How ``config init`` writes a key: its value (None: the example), and whether it is commented out."""

    value: Optional[str] = None  # a TOML literal; "{kind}" is the kind being written
    active: bool = True
    kinds: Optional[Tuple[str, ...]] = None  # only in a starter for these [source]/[psa] kinds


class Key(NamedTuple):
    """One config key: how it is checked and decoded, and how it is documented."""

    check: Check
    default: Any
    type: str
    meaning: str
    example: str
    default_doc: Optional[str] = None  # how the default reads in the reference, when not the default itself
    decode: Optional[Callable[[Any, "Context"], Any]] = None
    toml: Optional[str] = None  # the TOML name, when it is not the field's (``from`` is a keyword)
    starter: Optional[Starter] = None
    secret: bool = False  # a credential: key, key_env or key_file; decoded into a SecretRef
    sub: Optional[type] = None  # a sub-table ([notify.smtp]): its section class
    forms: Tuple[str, str] = ("", "")  # a secret's example variable and file name, for the reference


def key(check: Check, default: Any = None, *, type: str, meaning: str, example: str,
        default_doc: Optional[str] = None, decode: Optional[Callable[[Any, "Context"], Any]] = None,
        toml: Optional[str] = None, starter: Optional[Starter] = None) -> Any:
    """Declare a key; typed ``Any`` so that it can stand as any field's default."""
    return Key(check, default, type, meaning, example, default_doc, decode, toml, starter)


def secret(*, what: str, env: str, file: str, starter: Optional[Starter] = None) -> Any:
    """Declare a credential: one field, three TOML keys (the literal, ``_env`` and ``_file``).

    ``what`` names it ("the ConnectWise private key"); ``env`` and ``file`` are the examples the
    reference shows for its ``_env`` and ``_file`` forms. ``starter`` is for the ``_file`` form:
    a starter config never holds a literal secret.
    """
    return Key(_string, None, "string (secret)", what, '"..."', "-", None, None, starter, True, None, (env, file))


def sub(section_class: type) -> Any:
    """Declare a sub-table whose keys its own section class declares."""
    return Key(_table, None, "table", "", "", sub=section_class)


SectionT = TypeVar("SectionT", bound=type)


def section(name: str) -> Callable[[SectionT], SectionT]:
    """Turn a NamedTuple of :func:`key` declarations into a config section (see the module docstring)."""

    def make(cls: SectionT) -> SectionT:
        declared: Dict[str, Key] = dict(cls._field_defaults)  # type: ignore[attr-defined]
        for field, declaration in declared.items():
            if not isinstance(declaration, Key):
                raise TypeError(f"{cls.__name__}.{field} is not declared with key(), secret() or sub()")
        defaults = {field: (k.sub() if k.sub is not None else (SecretRef(_where(name), field) if k.secret
                                                               else k.default))
                    for field, k in declared.items()}
        cls.__new__.__defaults__ = tuple(defaults.values())  # type: ignore[attr-defined]
        cls._field_defaults = defaults  # type: ignore[attr-defined]
        cls.KEYS = declared  # type: ignore[attr-defined]
        cls.SECTION = name  # type: ignore[attr-defined]
        return cls

    return make


def _where(name: str) -> str:
    return f"[{name}]" if name else "the top level"


def toml_name(field: str, declaration: Key) -> str:
    return declaration.toml or field


def toml_names(cls: type) -> Dict[str, str]:
    """Every TOML key a section accepts -> the field it belongs to (a secret's three forms included)."""
    names: Dict[str, str] = {}
    for field, declaration in cls.KEYS.items():  # type: ignore[attr-defined]
        name = toml_name(field, declaration)
        names[name] = field
        if declaration.secret:
            names[f"{name}_env"] = field
            names[f"{name}_file"] = field
    return names


# -- decoding ----------------------------------------------------------------------


class Context(NamedTuple):
    """What a decode may need: the config file (paths in it are relative to its directory)."""

    path: Path


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


def resolve_relative(config_path: Path, value: str) -> Path:
    """Paths in the config are relative to the config file's directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else config_path.parent / path


def decode_section(cls: Type[T], table: Mapping[str, Any], ctx: Context, where: str) -> T:
    """The typed section for a table :func:`validate_section` accepted."""
    values: Dict[str, Any] = {}
    for field, declaration in cls.KEYS.items():  # type: ignore[attr-defined]
        name = toml_name(field, declaration)
        if declaration.sub is not None:
            inner = table.get(name)
            values[field] = decode_section(declaration.sub, inner if isinstance(inner, dict) else {}, ctx,
                                           f"{where}.{name}" if where else name)
        elif declaration.secret:
            values[field] = _secret(table, where, name, ctx.path)
        elif name in table:
            value = table[name]
            values[field] = declaration.decode(value, ctx) if declaration.decode else value
        # else: the section class holds the default
    return cls(**values)


def _secret(table: Mapping[str, Any], where: str, name: str, config_path: Path) -> SecretRef:
    given = tuple(n for n in (name, f"{name}_env", f"{name}_file") if table.get(n) not in (None, ""))
    return SecretRef(
        where=f"{config_path}: [{where}]", key=name,
        literal=str(table[name]) if name in given else None,
        env=str(table[f"{name}_env"]) if f"{name}_env" in given else None,
        file=resolve_relative(config_path, str(table[f"{name}_file"])) if f"{name}_file" in given else None,
        conflict=given if len(given) > 1 else (),
    )


# -- checking ----------------------------------------------------------------------


class Problem(Exception):
    """A config value is wrong: ``where`` (``psa.timeout``) and the problem in words; the value if showable."""

    def __init__(self, where: str, problem: str, shown: Optional[str] = None) -> None:
        super().__init__(f"{where} = {shown}: {problem}" if shown is not None
                         else f"{where}: {problem}" if where else problem)  # no where: the problem names it
        self.where = where


def validate_section(cls: type, table: Mapping[str, Any], where: str, depth: int = 0) -> None:
    """Raise :class:`Problem` for the first unknown key or bad value of ``table`` (a ``cls`` section)."""
    names = toml_names(cls)
    for name, value in table.items():
        field = names.get(name)
        dotted = f"{where}.{name}" if where else name
        if field is None:
            raise Problem("", f"unknown key {name!r} in [{where}]" if where else f"unknown key {name!r}")
        declaration: Key = cls.KEYS[field]  # type: ignore[attr-defined]
        if declaration.sub is not None:
            if not isinstance(value, dict):
                raise Problem(dotted, "expected a table", _shown_value(value, secretish=False))
            validate_section(declaration.sub, value, dotted, depth + 1)
            continue
        secretish = declaration.secret or names_a_secret(dotted)  # its _env and _file forms too
        check = _string if declaration.secret else declaration.check
        problem = check(value)
        if problem:
            raise Problem(dotted, problem, None if secretish else _shown_value(value, secretish=False))


# A key whose dotted name holds one of these marks a credential: a problem with it never shows the value.
SECRET_WORDS = ("password", "passwd", "secret", "token", "private", "api_key", "apikey", "credential")


def names_a_secret(dotted: str) -> bool:
    """Whether a key's dotted name (section and key) marks it as a secret, e.g. ``notify.smtp.password_file``."""
    lowered = dotted.lower()
    return any(word in lowered for word in SECRET_WORDS)


def _shown_value(value: Any, *, secretish: bool) -> Optional[str]:
    if secretish:
        return None
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return repr(value)


# -- checks ------------------------------------------------------------------------

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
               float: "a number", date: "a date", datetime: "a date-time"}


def of_type(*types: type) -> Check:
    names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)

    def check(value: Any) -> Optional[str]:
        if isinstance(value, bool) and bool not in types:
            return f"expected {names}"
        return None if isinstance(value, types) else f"expected {names}"

    return check


def all_of(*checks: Check) -> Check:
    def check(value: Any) -> Optional[str]:
        for c in checks:
            problem = c(value)
            if problem:
                return problem
        return None

    return check


def choice(options: Callable[[], Sequence[str]]) -> Check:
    """One of ``options()`` (asked when checking: a registry may grow, e.g. a test's PSA kind)."""

    def check(value: Any) -> Optional[str]:
        known = tuple(options())
        if value not in known:
            return "expected one of " + ", ".join(repr(o) for o in known)
        return None

    return check


def one_of(*options: str) -> Check:
    return choice(lambda: options)


def int_range(lo: int, hi: int) -> Check:
    def check(value: Any) -> Optional[str]:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"expected an integer {lo}-{hi}"
        return None

    return check


def number_range(lo: float, hi: float, unit: str = "a number") -> Check:
    def check(value: Any) -> Optional[str]:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not lo <= value <= hi):
            return f"expected {unit} from {lo:g} to {hi:g}"
        return None

    return check


def seconds(lo: float, hi: float) -> Check:
    return number_range(lo, hi, "a number of seconds")


def _no_line_break(value: Any) -> Optional[str]:
    if isinstance(value, str) and any(ch in value for ch in "\r\n\u2028\u2029\x85\x0b\x0c"):
        return "must not contain a line break"
    return None


def _no_control(value: Any) -> Optional[str]:
    if isinstance(value, str) and any(ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0 for ch in value):
        return "must not contain a control character"
    return None


_string = all_of(of_type(str), _no_line_break, _no_control)
STRING: Check = _string


def string_list(value: Any) -> Optional[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "expected a list of strings"
    for v in value:
        problem = _no_line_break(v) or _no_control(v)
        if problem:
            return problem
    return None


def argv(value: Any) -> Optional[str]:
    problem = string_list(value)
    if problem is None and not value:
        return "expected a non-empty list: the program, then its arguments"
    return problem


def _table(value: Any) -> Optional[str]:
    return None if isinstance(value, dict) else "expected a table"


BOOL = of_type(bool)


def url(*schemes: str) -> Check:
    """A URL with one of ``schemes``; its password (if any) is never shown in the problem."""

    def check(value: Any) -> Optional[str]:
        problem = _string(value)
        if problem:
            return problem
        from urllib.parse import urlsplit  # only a config with a URL key pays for it (not the cron path)

        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            return "is not a URL"
        if parts.scheme.lower() not in schemes or not parts.netloc:
            return f"expected a {' or '.join(s + '://' for s in schemes)} URL"
        return None

    return check


def duration_text(value: Any) -> Optional[str]:
    try:
        parse_duration(value)
    except ValueError as exc:
        return str(exc)
    return None


MAX_DURATION_DAYS = 366


def parse_duration(value: Any) -> timedelta:
    """``"24h"``, ``"90m"``, ``"2d"``, ``"30s"`` -> timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if isinstance(value, str):
        text = value.strip().lower()
        if 2 <= len(text) <= 12 and text[-1] in units and text[:-1].isdecimal() and text[:-1].isascii():
            total = int(text[:-1]) * units[text[-1]]
            if total > MAX_DURATION_DAYS * 86400:
                raise ValueError(f"expected a duration of at most {MAX_DURATION_DAYS}d")
            return timedelta(seconds=total)
    raise ValueError("expected a duration such as \"24h\", \"90m\" or \"2d\"")


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


def aware(value: Any) -> Optional[str]:
    if not isinstance(value, datetime) or value.tzinfo is None:
        return "expected a date-time with an offset"
    return None


# -- decodes -------------------------------------------------------------------------


def as_path(value: Any, ctx: Context) -> Optional[Path]:
    return resolve_relative(ctx.path, str(value)) if value else None


def as_seconds(value: Any, ctx: Context) -> float:
    return parse_duration(value).total_seconds() if isinstance(value, str) else float(value)


def as_float(value: Any, ctx: Context) -> float:
    return float(value)


def as_tuple(value: Any, ctx: Context) -> Tuple[str, ...]:
    return tuple(value)


def or_none(value: Any, ctx: Context) -> Any:
    return value if value not in ("", None) else None
