"""Shared fixtures: every path psabill touches points into tmp_path."""

from __future__ import annotations

from pathlib import Path
import socket
from typing import Any, Dict, List, Optional

import pytest
from click.testing import CliRunner, Result

from psabill.cli import cli


class Env:
    """A sandboxed psabill: config, state dir, crontab file and host zone in tmp_path."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp_path
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

    def snapshot(self) -> Dict[str, Any]:
        """Bytes of the config and crontab, to prove a failure changed nothing."""
        return {
            "config": self.config.read_bytes() if self.config.exists() else None,
            "crontab": self.crontab.read_bytes() if self.crontab.exists() else None,
        }


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(tmp_path, monkeypatch)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(autouse=True)
def _never_the_real_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even a test that forgets the env fixture must not edit the real crontab, config or home.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PSABILL_CRONTAB", str(tmp_path / "crontab"))
    monkeypatch.setenv("PSABILL_CONFIG", str(tmp_path / "conf" / "config.toml"))
    monkeypatch.setenv("PSABILL_STATE_DIR", str(tmp_path / "state"))


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
