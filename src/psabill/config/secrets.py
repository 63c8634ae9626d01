"""Credentials from the config: a literal, an environment variable or a file.

For a key such as ``[psa] secret`` the config may hold exactly one of
``secret`` (the value itself; the config must then be chmod 600),
``secret_env`` (the name of an environment variable) or ``secret_file`` (a
path, relative to the config file, whose content minus its trailing newline is
the value). A secret file must be a regular file that only its owner can read
or write (chmod 600), or it is refused before a byte of it is read, as a loose
config holding a literal secret is. Error messages name the key, the variable
or the file, never the value, so they are safe to print, log and email.

A file that cannot be read right now (missing while it is being replaced, a
permission change in flight, an NFS hiccup) is an
:class:`~psabill.errors.AbortError`: the run stops before any request and a
later firing within catch-up tries again. Everything else (a loose mode, a
FIFO, an empty file) is a :class:`~psabill.errors.ConfigError`, for the admin
to fix.

Every value resolved here is registered with :mod:`psabill.text.redact` before
it is returned, so the shared redactor knows a credential before any text that
could carry it leaves the process.
"""

import os
import re
import stat

from psabill.config.keys import SecretRef
from psabill.errors import AbortError, ConfigError, PsabillError
from psabill.text import redact
from psabill.text.files import check_private, read_regular

MAX_SECRET_BYTES = 64 * 1024


ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")  # how variables are named


def env_name_shown(ref: SecretRef) -> str:
    """How a message names ``ref``'s variable: ``$NAME`` for a name as variables are named, otherwise
    without it, since an admin may have pasted the secret itself into ``<key>_env``."""
    assert ref.env is not None
    if ENV_NAME.fullmatch(ref.env):
        return f"${ref.env}"
    return (f"a variable whose name is not in capitals, digits and _ (not shown: is it the secret itself? "
            f"put the secret in a mode 0600 file named by {ref.key}_file)")


def resolve(ref: SecretRef) -> str:
    """The credential ``ref`` points at, or an error naming where it should be."""
    where = ref.where
    if ref.conflict:
        raise ConfigError(f"{where} sets {' and '.join(ref.conflict)}: keep only one")
    if ref.literal is not None:
        return _registered(ref.literal)
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise ConfigError(f"{where} {ref.key}_env names {env_name_shown(ref)}, which is "
                              f"{'empty' if value == '' else 'not set'}")
        return _checked(value, f"{where} {ref.key}_env ({env_name_shown(ref)})")
    if ref.file is None:
        raise ConfigError(f"{where} needs {ref.key}_env, {ref.key}_file or {ref.key}")
    chosen = f"{where} {ref.key}_file:"
    check_private(ref.file, chosen, ConfigError)
    _check_unreadable_by_others(ref, chosen)
    try:
        raw = read_regular(ref.file, chosen, _Unreadable, limit=MAX_SECRET_BYTES,
                           describe_limit=lambda _limit: "64 KiB credential")
    except _Unreadable as exc:
        if "not a regular file" in exc.message or "limit" in exc.message:
            raise ConfigError(exc.message) from None
        raise AbortError(f"{exc.message}; nothing was sent (a later firing within catch-up tries again)") from None
    assert raw is not None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{chosen} {ref.file} is not UTF-8 text") from None
    # Editors and `echo secret > file` add one trailing newline; the secret itself never ends in one.
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{chosen} {ref.file} is empty")
    return _checked(value, f"{chosen} {ref.file}")


class _Unreadable(PsabillError):
    pass


def _check_unreadable_by_others(ref: SecretRef, chosen: str) -> None:
    """A secret file group or others can read is refused, with the chmod that fixes it."""
    assert ref.file is not None
    try:
        mode = stat.S_IMODE(os.stat(ref.file).st_mode)
    except OSError:
        return  # the read below reports it
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{chosen} {ref.file} is readable by group or others (mode {mode:04o}): "
                          f"run 'chmod 600 {ref.file}'; nothing was sent")


def _checked(value: str, where: str) -> str:
    """``value``, registered with the redactor, unless it holds a line break (then refused, value unshown)."""
    redact.register(value)
    if any(ch in value for ch in "\r\n\u2028\u2029\x85"):
        raise ConfigError(f"{where} holds more than one line: a credential is one line")
    return value


def _registered(value: str) -> str:
    return _checked(value, "a literal secret")
