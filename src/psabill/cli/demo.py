"""``psabill demo``: the whole job end to end, against the sandbox PSA, in a temp dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import click

from psabill import clock
from psabill import status as status_mod
from psabill.cli.options import App, echo, json_option, pass_app
from psabill.cli.render import emit_json
from psabill.config import edit
from psabill.config import settings as settings_mod
from psabill.config.paths import Paths
from psabill.errors import ExitCode, StateError
from psabill.run import guard
from psabill.sandbox import book as sample_book
from psabill.schedule import save as scheduling
from psabill.text.files import make_private_dir

DEMO_COMPANIES = 12  # enough for every case the book shows (psabill.sandbox.book)


@click.command()
@click.option("--dir", "directory", metavar="PATH", help="Where to put the demo files (default: a new temp dir).")
@json_option
@pass_app
def demo(app: App, directory: Optional[str], as_json: bool) -> None:
    """Run the whole job against a sandbox PSA on loopback; touches nothing of yours.

    It serves a LastPass stand-in and a ConnectWise sandbox on 127.0.0.1,
    writes a sample config reading seats from LastPass, saves a weekly schedule
    into a throwaway crontab file, shows the status, runs the billing update,
    writes the results email to a file, and prints where everything is.

    \b
    Example:
      psabill demo
    """
    made = directory is None
    base = Path(directory).resolve() if directory else Path(tempfile.mkdtemp(prefix="psabill-demo-"))
    try:
        _demo(app, base, as_json)
    except BaseException:
        if made:  # a demo that failed leaves nothing behind; rerun with --dir to keep its files
            shutil.rmtree(base, ignore_errors=True)
        raise


def _demo(app: App, base: Path, as_json: bool) -> None:
    make_private_dir(base, StateError, "demo directory")  # 0700 whatever the umask
    paths = Paths(config=base / "config.toml", state_dir=base / "state", crontab_file=base / "crontab")
    with sample_book.build("connectwise", companies=DEMO_COMPANIES) as book:
        sandbox, lastpass = book.psa, book.lastpass
        key_file = base / "cw-private-key"
        api_key_file = base / "lastpass-api-key"
        for path, secret in ((key_file, sandbox.private_key), (api_key_file, lastpass.api_key)):
            fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secret + "\n")
        edit.save(paths.config, {
            "account": {"name": "Demo MSP", "timezone": "America/New_York"},
            "notify": {
                "emails": ["billing@msp.example", "ops@msp.example"],
                "from": "psabill demo <psabill@demo.example>",
                "on_manual": True,
                "transport": "file",
                "file": {"dir": str(base / "outbox")},
            },
            "source": {**lastpass.config_section(), "api_key_file": api_key_file.name},
            "products": book.products,
            "psa": {**sandbox.config_section(), "private_key_file": key_file.name},
        })
        now = clock.now()
        host = clock.host_zone()
        request = scheduling.ScheduleRequest(mode="weekly", hour=9, weekday=1)
        current = settings_mod.load(paths.config)
        saved = scheduling.plan_save(current, request, now, host)
        scheduling.apply(paths, current, saved.settings, now, host)

        def say(text: str, bold: bool = False) -> None:
            if not as_json:
                echo(click.style(text, bold=True) if bold else text)

        say("== 1. Schedule saved", bold=True)
        say(f"{saved.schedule.describe()}; crontab lines written to {paths.crontab_file}")
        say("\n== 2. psabill status", bold=True)
        if not as_json and not app.quiet:
            echo(status_mod.build(paths, saved.settings, now, host).text())
        say(f"\n== 3. Billing update: LastPass stand-in at {lastpass.url} -> ConnectWise sandbox at "
            f"{sandbox.url}", bold=True)
        outcome = guard.run_manual(paths, clock.now, dry_run=False, verbose=app.verbose)
        report = outcome.run
        assert report is not None
        for item in report.items:
            if item.outcome == "updated":
                say(f"  updated   {item.customer} / {item.sku}: {item.old} -> {item.new}")
            elif item.outcome in ("failed", "unmapped"):
                hint = f" Fix: {item.hint}" if item.hint else ""
                say(f"  {item.outcome:<9} {item.customer} / {item.sku}: {item.message}.{hint}")
        counts = report.counts
        written = len(sandbox.patches())
        say(f"Run {report.id}: {report.status}; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + f"; {report.api_requests} API requests, {written} quantities written")
    emails = sorted((base / "outbox").glob("*.eml"))
    if as_json:
        emit_json({
            "schema": 1, "dir": str(base), "schedule": saved.schedule.describe(),
            "run": {**report.to_json(), "quantities_written": written},
            "files": {"config": str(paths.config), "crontab": str(paths.crontab_file),
                      "history": str(paths.db), "email": str(emails[-1]) if emails else None},
        })
    say("\n== 4. Where everything is", bold=True)
    say(f"  config:        {paths.config}")
    say(f"  crontab file:  {paths.crontab_file}")
    say(f"  history:       {paths.db}  (psabill --config {paths.config} "
        f"--state-dir {paths.state_dir} history show {report.id})")
    say(f"  results email: {emails[-1] if emails else 'not written: ' + report.email.message}")
    say(f"  (the servers were in memory and are gone; rm -r {base} removes the rest)")
    if outcome.exit_code not in (ExitCode.OK, ExitCode.PARTIAL):
        raise click.ClickException(outcome.error or f"demo run ended with {report.status}")

