"""Render a report with Jinja2: ``subject.txt``, ``body.txt`` and ``body.html``.

``[notify] template_dir`` overrides any of them file by file; the rest fall
back to the built-ins. The HTML template is autoescaped; the text and subject
templates are not (they are never interpreted as markup).

A template is code (Jinja can reach Python objects), so a ``template_dir``, or
a file in it, that another user could have written is refused before anything
is rendered (:func:`psabill.text.files.check_private`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, List, Optional


from psabill.errors import EmailError
from psabill.notify.attachment import items_csv
from psabill.notify.facts import context, header_text
from psabill.report import Run
from psabill.text import clean
from psabill.text.files import check_private, kind_of, os_problem

TEMPLATE_NAMES = ("subject.txt", "body.txt", "body.html")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    attachment_name: str = ""  # the CSV of every item, e.g. psabill-run-000042.csv; "" for none
    attachment: str = ""


def builtin_template_dir() -> Optional[Path]:
    """The shipped templates: ``psabill/templates`` in a wheel, ``templates/`` in a checkout."""
    try:
        packaged = files("psabill") / "templates"
        if packaged.is_dir():
            # Installed wheels and editable installs unpack to the file system; a
            # zipped install is not supported by psabill (cron needs a real path).
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError, OSError):  # odd loaders: try the checkout
        pass
    source = Path(__file__).resolve().parents[3] / "templates"
    return source if source.is_dir() else None


def _check_templates(template_dir: Path) -> None:
    """Refuse a template dir, or any file under it, that another user could have written, and anything
    there that is not a directory or a regular file (Jinja2 would skip a FIFO and fall back unseen)."""
    check_private(template_dir, "[notify] template_dir", EmailError)
    _check_kind(template_dir, "[notify] template_dir", stat.S_ISDIR, "a directory")
    for root, dirs, names in os.walk(template_dir):
        for name in dirs + names:
            check_private(Path(root) / name, "template", EmailError)
        for name in names:
            _check_kind(Path(root) / name, "template", stat.S_ISREG, "a regular file")


def _check_kind(path: Path, what: str, wanted: Any, word: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise EmailError(f"cannot use {what} {path}: {os_problem(exc)}") from None
    if not wanted(mode):
        raise EmailError(f"{what} {path} is {kind_of(mode)}, not {word}: point it at {word}")


def _environment(template_dir: Optional[Path]) -> Any:
    import jinja2  # only rendering needs it: a run with no addresses, or `status`, never loads Jinja

    loaders: List[Any] = []
    if template_dir is not None:
        _check_templates(template_dir)
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    builtin = builtin_template_dir()
    if builtin is not None:
        loaders.append(jinja2.FileSystemLoader(str(builtin)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        # Only HTML is markup; escaping the text body would show "&amp;" to the reader.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm"), default=False),
        undefined=jinja2.StrictUndefined,  # a typo in a custom template fails loudly
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ljust"] = lambda value, width: str(value).ljust(int(width))
    env.filters["rjust"] = lambda value, width: str(value).rjust(int(width))
    return env


def render(
    run: Run,
    *,
    template_dir: Optional[Path] = None,
    history_url: Optional[str] = None,
    site_url: Optional[str] = None,
    next_attempt: Any = None,
) -> Rendered:
    """Subject, text and HTML for ``run``; template problems raise EmailError."""
    import jinja2  # as in _environment

    env = _environment(template_dir)
    facts = context(run, history_url, site_url, next_attempt)
    out: Dict[str, str] = {}
    for name in TEMPLATE_NAMES:
        try:
            out[name] = env.get_template(name).render(**facts)
        except jinja2.TemplateNotFound:
            raise EmailError(
                f"email template {name} not found (template_dir {template_dir}, "
                f"built-ins {builtin_template_dir()})"
            ) from None
        except jinja2.TemplateError as exc:
            lineno = getattr(exc, "lineno", None)  # only syntax errors carry one
            where = f" line {lineno}" if lineno else ""
            raise EmailError(f"email template {name}{where}: {clean.message(exc)}") from None
        except Exception as exc:  # a custom template's filter/test can raise anything; the run must survive it
            raise EmailError(f"email template {name}: {type(exc).__name__}: {clean.message(exc)}") from None
    subject = header_text(out["subject.txt"])
    if not subject:
        raise EmailError("email template subject.txt rendered an empty subject")
    name = facts["attachment"]
    return Rendered(subject=subject, text=out["body.txt"], html=out["body.html"],
                    attachment_name=name, attachment=items_csv(run) if name else "")
