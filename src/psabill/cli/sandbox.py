"""``psabill sandbox``: a sandbox PSA on loopback to try a config against, until Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

import click

from psabill.cli.options import App, pass_app
from psabill.errors import UsageError
from psabill.sandbox import book as sample_book

COMPANIES = 12  # every case the demo shows (psabill.sandbox.book)

@click.command()
@click.option("--psa", "kind", type=click.Choice(["connectwise", "autotask"]), default="connectwise",
              show_default=True, help="Which PSA the sandbox speaks.")
@click.option("--source", "source", type=click.Choice(["lastpass"]), default=None,
              help="Also serve a LastPass stand-in whose managed companies the sample customers bill.")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Port on 127.0.0.1 (default: a free one).")
@pass_app
def sandbox(app: App, kind: str, source: Optional[str], port: int) -> None:
    """Serve a sandbox PSA on 127.0.0.1 until Ctrl-C, to try your source and products.

    It holds sample companies, agreements (contracts) and products, prints
    the [psa] section to paste into a config (its key goes to a mode 0600
    file it names) and the sample customers, then serves until interrupted.
    With --source lastpass it also serves a LastPass stand-in holding those
    customers as managed companies, and prints its [source] section. The
    sample holds every case the demo shows: an unmapped company, one billed
    on two agreements, one lacking a product, a suspended one. Nothing real
    is touched. `psabill demo` is the one-command end-to-end run.

    \b
    Example:
      psabill sandbox --psa connectwise --source lastpass --port 8765
      psabill config init --source lastpass   # then paste the printed sections
      psabill run --dry-run
    """
    try:
        book = sample_book.build(kind, companies=COMPANIES, port=port)
        book.psa.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    try:
        if source:
            book.lastpass.start()
        psa = {**(book.psa.config_section() if kind == "connectwise" else _autotask_section(book.psa))}
        secret_key, secret = (("private_key_file", book.psa.private_key) if kind == "connectwise"
                              else ("secret_file", book.psa.secret))
        psa[secret_key] = str(_write_key(app.paths.config, kind, secret))
        lastpass: Dict[str, Any] = {}
        if source:
            lastpass = {**book.lastpass.config_section(),
                        "api_key_file": str(_write_key(app.paths.config, "lastpass", book.lastpass.api_key))}
        # SIGTERM (systemd, docker, kill) ends the sandbox as cleanly as Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:  # around the printing too: Ctrl-C right after the section is printed still exits 0
            _print(book, psa, lastpass)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    finally:
        if source:
            book.lastpass.stop()
        book.psa.stop()
        if "dir" in _KEY_DIR:  # keys of a stopped sandbox open nothing: no temp dir outlives it
            shutil.rmtree(_KEY_DIR.pop("dir"), ignore_errors=True)
    click.echo("Sandbox stopped.")


def _autotask_section(server: Any) -> Dict[str, Any]:
    return {"kind": "autotask", "url": server.url + "/ATServicesRest/", "username": server.username,
            "integration_code": server.integration_code}


_KEY_DIR: Dict[str, Path] = {}


def _write_key(config: Path, kind: str, secret: str) -> Path:
    """A sandbox key in a mode 0600 file: next to the config when its directory exists, else in one temp dir."""
    if config.parent.is_dir():
        directory = config.parent
    else:
        directory = _KEY_DIR.setdefault("dir", Path(tempfile.mkdtemp(prefix="psabill-sandbox-")))
    path = directory / f"sandbox-{kind}-key"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)
    return path.resolve()


def _toml(value: Any) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _print(book: Any, psa: Dict[str, Any], lastpass: Dict[str, Any]) -> None:
    title = "ConnectWise PSA" if book.kind == "connectwise" else "Autotask"
    click.echo(f"# {title} sandbox listening on {book.psa.url} (Ctrl-C stops it; its data lives in memory only)")
    if lastpass:
        click.echo(f"# LastPass stand-in listening on {book.lastpass.url}")
    click.echo("# Paste this into your config (each key is in the mode 0600 file it names):")
    click.echo("")
    for name, section in (("psa", psa), ("source", lastpass), ("products", book.products)):
        if not section:
            continue
        click.echo(f"[{name}]")
        for key, value in section.items():
            click.echo(f"{_toml(key) if not key.replace('_', '').isalnum() else key} = {_toml(value)}")
        click.echo("")
    click.echo("# Sample customers (use the identifier or the exact name in your usage source's customer column):")
    for line in book.lines:
        click.echo(f"#   {line}")
    click.echo("# What a run against them shows:")
    for case in book.cases:
        click.echo(f"#   {case.customer}: {case.what}")
    click.echo("# Then: psabill check; psabill run --dry-run; psabill run")
    sys.stdout.flush()
