"""Credentials from the config: a literal, an environment variable or a file.

For a key such as ``[psa] secret`` the config may hold exactly one of
``secret`` (the value itself; the config must then be chmod 600),
``secret_env`` (the name of an environment variable) or ``secret_file`` (a
path, relative to the config file, whose content minus its trailing newline is
the value). Error messages name the key, the variable or the file, never the
value, so they are safe to print, log and email.

Every value resolved here is registered with :mod:`psabill.redact` before it
is returned, so the shared redactor knows a credential before any text that
could carry it leaves the process.
"""

from __future__ import annotations

import os
from typing import Optional

from psabill import redact
from psabill.config import Config
from psabill.errors import ConfigError

MAX_SECRET_BYTES = 64 * 1024


def resolve_secret(cfg: Config, section: str, key: str, *, required: bool = True) -> Optional[str]:
    """The credential ``section.key`` (section may be dotted: ``notify.smtp``).

    Returns None only when nothing is configured and ``required`` is False.
    """
    table = cfg.get(section, {})
    if not isinstance(table, dict):
        table = {}
    where = f"{cfg.path}: [{section}]"
    given = [name for name in (key, f"{key}_env", f"{key}_file") if table.get(name) not in (None, "")]
    if len(given) > 1:
        raise ConfigError(f"{where} sets {' and '.join(given)}: keep only one")
    if not given:
        if required:
            raise ConfigError(f"{where} needs {key}_env, {key}_file or {key}")
        return None
    chosen = given[0]
    if chosen == key:
        return _registered(str(table[key]))
    if chosen.endswith("_env"):
        var = str(table[chosen])
        value = os.environ.get(var)
        if not value:
            raise ConfigError(f"{where} {chosen} names ${var}, which is {'empty' if value == '' else 'not set'}")
        return _registered(value)
    path = cfg.resolve_relative(str(table[chosen]))
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where} {chosen}: {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} {chosen}: {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"{where} {chosen}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(f"{where} {chosen}: {path} is too large to be a credential")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} {chosen}: {path} is not UTF-8 text") from None
    # Editors and `echo secret > file` add one trailing newline; the secret
    # itself never ends in one.
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{where} {chosen}: {path} is empty")
    if "\n" in value or "\r" in value:
        raise ConfigError(f"{where} {chosen}: {path} holds more than one line")
    return _registered(value)


def _registered(value: str) -> str:
    """``value``, now known to the shared redactor."""
    redact.register(value)
    return value
