"""Shared test helpers: a sandboxed psabill environment, a config builder, an SMTP sink."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import tomli_w
from click.testing import CliRunner, Result

from psabill.cli import cli
from psabill.sandbox.connectwise import Sandbox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Env:
    """A sandboxed psabill: config, state dir, crontab file and host zone in tmp_path."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp_path
        self._servers: List[Any] = []
        self.config = tmp_path / "conf" / "config.toml"
        self.state_dir = tmp_path / "state"
        self.crontab = tmp_path / "crontab"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("PSABILL_CONFIG", str(self.config))
        monkeypatch.setenv("PSABILL_STATE_DIR", str(self.state_dir))
        monkeypatch.setenv("PSABILL_CRONTAB", str(self.crontab))
        monkeypatch.setenv("PSABILL_HOST_TZ", "UTC")
        monkeypatch.delenv("PSABILL_NOW", raising=False)
        monkeypatch.delenv("TZ", raising=False)

    def host(self, zone: str) -> None:
        self.monkeypatch.setenv("PSABILL_HOST_TZ", zone)

    def run(self, *args: str, now: Optional[str] = None, input: Optional[str] = None,
            env: Optional[Dict[str, str]] = None) -> Result:
        extra = dict(env or {})
        if now is not None:
            extra["PSABILL_NOW"] = now
        return CliRunner().invoke(cli, list(args), env=extra, input=input, catch_exceptions=False)

    def make_ready(self) -> Sandbox:
        """Add the [source], [products] and [psa] a run needs (a run without them is refused),
        and deliver any report to a file.

        The PSA is a one-customer ConnectWise sandbox on loopback (alive until the test
        ends) whose line already holds the source's seats: a run reads the source and the
        PSA, writes nothing and succeeds. Tests that use this are about the guard and the
        ledger, not the PSA."""
        sandbox = self.sandbox()
        data = tomllib.loads(self.config.read_text()) if self.config.exists() else {}
        self.config.parent.mkdir(parents=True, exist_ok=True)
        write_old(self.config.parent / "usage.csv", "customer,sku,seats\nCUST00001,LastPass,10\n")
        (self.config.parent / "psa-key").write_text(sandbox.private_key + "\n")
        os.chmod(self.config.parent / "psa-key", 0o600)
        data["source"] = {"kind": "csv", "path": "usage.csv"}
        data["products"] = {"LastPass": "SEATS-STD"}
        data.setdefault("notify", {}).update({"transport": "file", "file": {"dir": str(self.tmp / "outbox")},
                                             "from": "psabill@msp.example"})
        data["psa"] = {**sandbox.config_section(), "private_key_file": "psa-key", "max_retries": 0}
        self.config.write_text(tomli_w.dumps(data))
        os.chmod(self.config, 0o600)
        return sandbox

    def sandbox(self) -> Sandbox:
        """A one-customer ConnectWise sandbox (CUST00001, SEATS-STD = 10), stopped when the test ends."""
        if not self._servers:
            sandbox = Sandbox()
            agreement = sandbox.add_agreement(sandbox.add_company("CUST00001", "Customer 00001 Ltd"))
            sandbox.add_addition(agreement, "SEATS-STD", 10)
            self._servers.append(sandbox.start())
        return self._servers[0]

    def close(self) -> None:
        for server in self._servers:
            server.stop()
        self._servers.clear()

    def snapshot(self) -> Dict[str, Any]:
        """Bytes of the config and crontab, to prove a failure changed nothing."""
        return {
            "config": self.config.read_bytes() if self.config.exists() else None,
            "crontab": self.crontab.read_bytes() if self.crontab.exists() else None,
        }


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """aiosmtpd handler that keeps every envelope."""

    def __init__(self) -> None:
        self.envelopes: List[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


ADDRESSES = ["billing@msp.example", "ops@msp.example"]
SCHEDULED_NOW = "2026-12-01T14:00:00Z"


def write_old(path: Path, text: str) -> None:
    """Write a source file as an exporter that finished a while ago would have left it.

    psabill waits for a file modified in the last seconds to settle (a file still being
    written must not be read); tests write their sources and run at once, so the file's
    time is set back."""
    path.write_text(text)
    os.chmod(path, 0o600)
    os.utime(path, (1_000_000_000, 1_000_000_000))


def configure(env: Env, sandbox: Sandbox, smtp_port: int, *, guard: bool = False, **psa: Any) -> None:
    """A config for the sandbox PSA (plus ``psa`` overrides), a usage CSV with every kind
    of outcome, a weekly schedule and an SMTP server on ``smtp_port``.

    The guard is off unless ``guard``: the sandbox's sample quantities are random, and
    tests that use this are about other things than the safety net."""
    usage = env.config.parent / "usage.csv"
    env.config.parent.mkdir(parents=True, exist_ok=True)
    rows = ["customer,sku,seats,psa_company"]
    rows += [f"CUST{n:05d},LastPass,{20 + n}," for n in range(1, 7)]
    rows += ["CUST00001,LastPass+MFA,1,", "GLOBEX,LastPass,41,", "<b>Acme & Co</b>,LastPass,9,ACME", "Nobody Inc,LastPass,4,"]
    write_old(usage, "\n".join(rows) + "\n")
    key = env.config.parent / "cw-key"
    key.write_text(sandbox.private_key)
    os.chmod(key, 0o600)
    env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
            "--notify", ", ".join(ADDRESSES), now="2026-11-26T12:00:00Z")
    data = tomllib.loads(env.config.read_text())
    data["account"]["name"] = "Zürich Managed IT"
    data["source"] = {"kind": "csv", "path": "usage.csv"}
    data["products"] = {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA"}
    data["psa"] = {**sandbox.config_section(), "private_key_file": "cw-key", "max_retries": 0, **psa}
    if not guard:
        data["guard"] = {"enabled": False}
    # A real From: test hosts often have no domain name, and then psabill refuses to guess one.
    data["notify"].update({"transport": "smtp", "from": "psabill@msp.example.com",
                           "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": 5}})
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)


def settings_for(path: Path, data: Dict[str, Any]) -> Any:
    """Typed settings for a config document, validated as a loaded file would be."""
    from psabill.config.settings import from_document, validate

    validate(data, path)  # the keys a test uses must be real config keys
    return from_document(path, data)


def read_source(settings: Any) -> Any:
    """The usage rows of ``settings``' source, as a run reads them."""
    from psabill.sources import reader

    return reader(settings.source.kind)(settings.source, set(settings.product_map), settings.path).rows


def psa_settings(section: Dict[str, Any]) -> Any:
    """Typed ``[psa]`` settings for a section dict, as a client receives them."""
    from psabill.config.settings import from_document

    return from_document(Path("/nonexistent/config.toml"), {"psa": dict(section)}).psa


def connectwise_log_problems(sandbox: Sandbox) -> List[str]:
    """Every request in the ConnectWise sandbox's log, checked against the published schema.

    The log leaves out the Authorization value on purpose; a request the
    sandbox answered without a 401 carried exactly ``sandbox.authorization``
    (the sandbox compares it byte for byte), so that value stands in for it.
    """
    from urllib.parse import urlencode

    from support.psa_schema import connectwise_problems

    problems: List[str] = []
    for request in sandbox.requests:
        headers = dict(request.headers)
        if request.status != 401 and "login/companyinfo" not in request.endpoint:
            headers["Authorization"] = sandbox.authorization
        url = sandbox.url + request.path + (f"?{urlencode(request.query)}" if request.query else "")
        problems.extend(connectwise_problems(request.method, url, headers, request.body))
    if sandbox.companyinfo_with_credentials:
        problems.append(f"{sandbox.companyinfo_with_credentials} companyinfo request(s) carried credentials")
    return problems


def separate_runner() -> CliRunner:
    """A CliRunner whose ``stderr`` is kept apart from ``stdout`` on every Click version."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2 (Python 3.9)
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart already


def edit_config(env: Env, **sections: Dict[str, Any]) -> None:
    """Merge ``sections`` into the env's config (each key of each section set), kept at 0600."""
    data = tomllib.loads(env.config.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)
