"""``psabill sandbox``: a sandbox PSA on loopback to try a config against, until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Tuple

import click

from psabill.cli.options import App, pass_app
from psabill.errors import UsageError
from psabill.sandbox.autotask import AutotaskStandin
from psabill.sandbox.connectwise import Sandbox

CUSTOMERS = 5
# Autotask sample: catalogue services (id, name); [products] may name either.
AUTOTASK_SERVICES = ((501, "SEATS-STD"), (502, "SEATS-MFA"))


@click.command()
@click.option("--psa", "kind", type=click.Choice(["connectwise", "autotask"]), default="connectwise",
              show_default=True, help="Which PSA the sandbox speaks.")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Port on 127.0.0.1 (default: a free one).")
@pass_app
def sandbox(app: App, kind: str, port: int) -> None:
    """Serve a sandbox PSA on 127.0.0.1 until Ctrl-C, to try your source and products.

    It holds sample companies, agreements (contracts) and products, prints
    the [psa] section to paste into a config (its key goes to a mode 0600
    file it names) and the sample customers, then serves until interrupted.
    Nothing real is touched. `psabill demo` is the one-command end-to-end run.

    \b
    Example:
      psabill sandbox --psa connectwise --port 8765
      psabill config init --source csv     # then paste the printed [psa] section
      psabill run --dry-run
    """
    try:
        server, section, secret_key, customers = (_connectwise(port) if kind == "connectwise" else _autotask(port))
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    key_file = _write_key(app.paths.config, kind, section.pop("_secret"))
    section[secret_key] = str(key_file)
    # SIGTERM (systemd, docker, kill) ends the sandbox as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:  # around the printing too: Ctrl-C right after the section is printed still exits 0
        with server:
            _print(kind, server.url, section, key_file, customers)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    click.echo("Sandbox stopped.")


def _connectwise(port: int) -> Tuple[Any, Dict[str, Any], str, List[str]]:
    server = Sandbox.sample(customers=CUSTOMERS, seed=7, port=port)
    section = {**server.config_section(), "_secret": server.private_key}
    customers = []
    for company in sorted(server.companies.values(), key=lambda c: c["id"]):
        for agreement in server.agreements.values():
            if agreement["company"]["id"] != company["id"] or agreement["agreementStatus"] != "Active":
                continue
            lines = [f"{x['product']['identifier']} = {x['quantity']:g}"
                     for x in server.additions[agreement["id"]].values() if not x.get("cancelledDate")]
            customers.append(f"{company['identifier']:<10} {company['name']!r}, agreement {agreement['name']!r} "
                             f"(#{agreement['id']}): {', '.join(lines)}")
    return server, section, "private_key_file", customers


def _autotask(port: int) -> Tuple[Any, Dict[str, Any], str, List[str]]:
    server = AutotaskStandin(today=date.today(), port=port)
    for service_id, name in AUTOTASK_SERVICES:
        server.add_catalog_service(name, service_id)
    customers = []
    for n in range(1, CUSTOMERS + 1):
        number, name = f"CUST{n:05d}", f"Customer {n:05d} Ltd"
        contract = server.add_contract(server.add_company(name, number))
        lines = []
        for i, (service_id, service) in enumerate(AUTOTASK_SERVICES):
            units = 10 * n + i
            server.add_service(contract, service_id, units)
            lines.append(f"{service} (service {service_id}) = {units}")
        customers.append(f"{number:<10} {name!r}, contract 'Managed Services' (#{contract}): {', '.join(lines)}")
    section = {"kind": "autotask", "url": server.url + "/ATServicesRest/", "username": server.username,
               "integration_code": server.integration_code, "_secret": server.secret}
    return server, section, "secret_file", customers


def _write_key(config: Path, kind: str, secret: str) -> Path:
    """The sandbox's key in a mode 0600 file: next to the config when its directory exists, else a temp dir."""
    directory = config.parent if config.parent.is_dir() else Path(tempfile.mkdtemp(prefix="psabill-sandbox-"))
    path = directory / f"sandbox-{kind}-key"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)
    return path.resolve()


def _toml(value: Any) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _print(kind: str, url: str, section: Dict[str, Any], key_file: Path, customers: List[str]) -> None:
    title = "ConnectWise PSA" if kind == "connectwise" else "Autotask"
    click.echo(f"# {title} sandbox listening on {url} (Ctrl-C stops it; its data lives in memory only)")
    click.echo(f"# Paste this into your config (the key is in {key_file}, mode 0600):")
    click.echo("")
    click.echo("[psa]")
    for key, value in section.items():
        click.echo(f"{key} = {_toml(value)}")
    click.echo("")
    if kind == "connectwise":
        click.echo("# [products] maps your SKUs to these product identifiers, e.g.")
        click.echo('#   [products]\n#   LastPass = "SEATS-STD"\n#   "LastPass+MFA" = "SEATS-MFA"')
    else:
        click.echo("# [products] maps your SKUs to these service ids or exact service names, e.g.")
        click.echo('#   [products]\n#   LastPass = 501\n#   "LastPass+MFA" = "SEATS-MFA"')
    click.echo("# Sample customers (use the identifier or the exact name in your usage source's customer column):")
    for line in customers:
        click.echo(f"#   {line}")
    click.echo("# Then: psabill check; psabill run --dry-run; psabill run --yes")
    sys.stdout.flush()
