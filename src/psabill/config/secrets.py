"""Credentials from the config: a literal, an environment variable or a file.

For a key such as ``[psa] secret`` the config may hold exactly one of
``secret`` (the value itself; the config must then be chmod 600),
``secret_env`` (the name of an environment variable) or ``secret_file`` (a
path, relative to the config file, whose content minus its trailing newline is
the value). Error messages name the key, the variable or the file, never the
value, so they are safe to print, log and email.

Every value resolved here is registered with :mod:`psabill.text.redact` before it
is returned, so the shared redactor knows a credential before any text that
could carry it leaves the process. A ``*_file`` another user could have written
is refused before it is read (:func:`psabill.text.files.check_private`).
"""

from __future__ import annotations

import os

from psabill.text import redact
from psabill.errors import ConfigError
from psabill.text.files import check_private, read_capped
from psabill.config.settings import SecretRef

MAX_SECRET_BYTES = 64 * 1024


def resolve(ref: SecretRef) -> str:
    """The credential ``ref`` points at, or a ConfigError naming where it should be."""
    where = ref.where
    if ref.conflict:
        raise ConfigError(f"{where} sets {' and '.join(ref.conflict)}: keep only one")
    if ref.literal is not None:
        return _registered(ref.literal)
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise ConfigError(f"{where} {ref.key}_env names ${ref.env}, which is "
                              f"{'empty' if value == '' else 'not set'}")
        return _registered(value)
    if ref.file is None:
        raise ConfigError(f"{where} needs {ref.key}_env, {ref.key}_file or {ref.key}")
    chosen = f"{ref.key}_file"
    check_private(ref.file, f"{where} {chosen}:", ConfigError)
    raw = read_capped(ref.file, MAX_SECRET_BYTES, error=ConfigError, what=f"{where} {chosen}:",
                      describe_limit=lambda _limit: "64 KiB credential")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} {chosen}: {ref.file} is not UTF-8 text") from None
    # Editors and `echo secret > file` add one trailing newline; the secret
    # itself never ends in one.
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{where} {chosen}: {ref.file} is empty")
    if "\n" in value or "\r" in value:
        raise ConfigError(f"{where} {chosen}: {ref.file} holds more than one line")
    return _registered(value)


def _registered(value: str) -> str:
    """``value``, now known to the shared redactor."""
    redact.register(value)
    return value
