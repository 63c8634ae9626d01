"""``psabill demo``: the whole job end to end, against the sandbox PSA, in a temp dir."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

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
from psabill.sandbox.connectwise import FUTURE_CANCELLED, Sandbox
from psabill.schedule import save as scheduling
from psabill.text.files import make_private_dir

DEMO_CUSTOMERS = 12


@click.command()
@click.option("--dir", "directory", metavar="PATH", help="Where to put the demo files (default: a new temp dir).")
@json_option
@pass_app
def demo(app: App, directory: Optional[str], as_json: bool) -> None:
    """Run the whole job against a sandbox PSA on loopback; touches nothing of yours.

    It writes a sample config and usage CSV, saves a weekly schedule into a
    throwaway crontab file, shows the status, runs the billing update against
    a ConnectWise-compatible sandbox on 127.0.0.1, writes the results email to
    a file, and prints where everything is.

    \b
    Example:
      psabill demo
    """
    base = Path(directory).resolve() if directory else Path(tempfile.mkdtemp(prefix="psabill-demo-"))

    make_private_dir(base, StateError, "demo directory")  # 0700 whatever the umask
    paths = Paths(config=base / "config.toml", state_dir=base / "state", crontab_file=base / "crontab")
    with Sandbox.sample(customers=DEMO_CUSTOMERS, seed=7) as sandbox:
        # One customer billed on two active agreements: psabill must not guess.
        twice = sandbox.add_company("GLOBEX", "Globex Corporation")
        for name in ("Managed Services", "Managed Services 2026"):
            sandbox.add_addition(sandbox.add_agreement(twice, name), "SEATS-STD", 40)
        key_file = base / "cw-private-key"
        key_file.write_text(sandbox.private_key + "\n")
        os.chmod(key_file, 0o600)
        usage = base / "usage.csv"
        _write_usage(usage, sandbox)
        os.chmod(usage, 0o600)  # a loose source is refused, and the umask may be 000
        os.utime(usage, (1, 1))  # written and finished: a source still being written would be waited for
        edit.save(paths.config, {
            "account": {"name": "Demo MSP", "timezone": "America/New_York"},
            "notify": {
                "emails": ["billing@msp.example", "ops@msp.example"],
                "from": "psabill demo <psabill@demo.example>",
                "on_manual": True,
                "transport": "file",
                "file": {"dir": str(base / "outbox")},
            },
            "source": {"kind": "csv", "path": usage.name},
            "products": {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA"},
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
        say(f"\n== 3. Billing update against the sandbox PSA at {sandbox.url}", bold=True)
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
            "files": {"config": str(paths.config), "usage_csv": str(usage), "crontab": str(paths.crontab_file),
                      "history": str(paths.db), "email": str(emails[-1]) if emails else None},
        })
    say("\n== 4. Where everything is", bold=True)
    say(f"  config:        {paths.config}")
    say(f"  usage CSV:     {usage}")
    say(f"  crontab file:  {paths.crontab_file}")
    say(f"  history:       {paths.db}  (psabill --config {paths.config} "
        f"--state-dir {paths.state_dir} history show {report.id})")
    say(f"  results email: {emails[-1] if emails else 'not written: ' + report.email.message}")
    if outcome.exit_code not in (ExitCode.OK, ExitCode.PARTIAL):
        raise click.ClickException(outcome.error or f"demo run ended with {report.status}")


def _write_usage(path: Path, sandbox: Any) -> None:
    """A month's usage as a real source gives it: the sandbox's seats, a few up or down for about half
    the lines (the guard, on as it is by default, lets that through), plus a customer billed on two
    agreements (GLOBEX: psabill must not guess) and one the PSA does not know, whose name needs escaping."""
    def seats(identifier: str, product: str) -> int:
        # The line a run writes: the active agreement's addition that bills now (not cancelled, not yet to start).
        for agreement in sandbox.agreements.values():
            if agreement["company"]["identifier"] != identifier or agreement["agreementStatus"] != "Active":
                continue
            for line in sandbox.additions[agreement["id"]].values():
                billing = line["cancelledDate"] in (None, FUTURE_CANCELLED) and line["effectiveDate"] < "2099"
                if line["product"]["identifier"] == product and billing:
                    return int(line["quantity"])
        return 0

    rows = []
    for n in range(1, DEMO_CUSTOMERS + 1):
        identifier = f"CUST{n:05d}"
        for i, (sku, product) in enumerate((("LastPass", "SEATS-STD"), ("LastPass+MFA", "SEATS-MFA"))):
            now = seats(identifier, product)
            step = (n + 3 * i) % 4  # half the lines move: a few seats up or one down
            change = (0, 2 + n % 3, 0, -1)[step]
            rows.append((identifier, sku, max(now + change, 1), ""))
    rows.append(("GLOBEX", "LastPass", 42, ""))
    rows.append(("<b>Acme & Co</b>", "LastPass", 7, ""))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["customer", "sku", "seats", "psa_company"])
        writer.writerows(rows)
