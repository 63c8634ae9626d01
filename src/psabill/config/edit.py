"""Writing the config: build new settings, then save them keeping the admin's bytes.

:func:`prospective` builds (and validates) the new document with whole
top-level sections replaced; :func:`write` saves it. A config that exists is
edited in place with tomlkit: only the keys whose values changed are touched,
so every comment, the key order and the formatting the admin chose survive
(tomllib stays the reader and validator). A new config is written whole, by
tomlkit too. The file is replaced atomically, through a symlink to its target
(:func:`psabill.text.files.atomic_write`); callers that load, plan and write
hold :func:`psabill.ledger.lock.config_lock` around all of it.
"""

from typing import Any, Dict, Mapping, Optional

import tomlkit

from psabill.config.schema import VERSION
from psabill.config.settings import Settings, from_document, parse_document, validate
from psabill.errors import ConfigError
from psabill.text.files import atomic_write


def section_of(settings: Settings, name: str) -> Dict[str, Any]:
    """A copy of one top-level section of the document, for :func:`prospective` to replace."""
    value = settings.document.get(name, {})
    return dict(value) if isinstance(value, dict) else {}


def prospective(settings: Settings, changes: Mapping[str, Optional[Mapping[str, Any]]]) -> Settings:
    """The settings with whole top-level sections replaced (``None`` drops one), validated; nothing is written."""
    document: Dict[str, Any] = dict(settings.document)
    for name, section in changes.items():
        if section is None:
            document.pop(name, None)
        else:
            document[name] = dict(section)
    validate(document, settings.path)
    return from_document(settings.path, document, exists=settings.exists)


def write(settings: Settings) -> None:
    """Save ``settings`` (as :func:`prospective` built them) to their path, keeping the admin's bytes."""
    try:
        raw = settings.path.read_bytes()
    except FileNotFoundError:
        save(settings.path, settings.document)
        return
    except OSError as exc:
        raise ConfigError(f"cannot read config {settings.path}: {exc.strerror}") from None
    text = edit(raw.decode("utf-8"), settings.document)
    parse_document(text.encode("utf-8"), settings.path)  # what we write must read back
    atomic_write(settings.path, text.encode("utf-8"), error=ConfigError, what="config", prefix=".config-")


def edit(text: str, document: Mapping[str, Any]) -> str:
    """``text`` changed to hold ``document``: only keys whose values differ are touched."""
    doc = tomlkit.parse(text)
    wanted = dict(document)
    if "version" not in doc:
        wanted.pop("version", None)
    _merge(doc, wanted)
    return tomlkit.dumps(doc)


def _merge(target: Any, wanted: Mapping[str, Any]) -> None:
    for name in [k for k in target.keys() if k not in wanted]:
        del target[name]
    for name, value in wanted.items():
        if name in target:
            current = target[name]
            if isinstance(value, dict) and isinstance(current, dict):
                _merge(current, value)
                continue
            plain = current.unwrap() if hasattr(current, "unwrap") else current
            if plain == value and type(plain) is type(value):
                continue
        target[name] = value


def render(document: Mapping[str, Any]) -> str:
    """A whole document as TOML: ``version`` first, then plain keys, then tables."""
    versioned = {"version": VERSION, **{k: v for k, v in document.items() if k != "version"}}
    ordered = {**{k: v for k, v in versioned.items() if not isinstance(v, dict)},
               **{k: v for k, v in versioned.items() if isinstance(v, dict)}}
    return tomlkit.dumps(ordered)


def save(path: Any, document: Mapping[str, Any]) -> None:
    """Atomically replace ``path`` with ``document`` (mode 0600, fsynced)."""
    atomic_write(path, render(document).encode("utf-8"), error=ConfigError, what="config", prefix=".config-")
