"""Fixtures only: every path psabill touches points into tmp_path. Helpers live in tests/support/."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from psabill.sandbox.connectwise import Sandbox
from support.env import Env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def _never_the_real_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even a test that forgets the env fixture must not edit the real crontab, config or home.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PSABILL_CRONTAB", str(tmp_path / "crontab"))
    monkeypatch.setenv("PSABILL_CONFIG", str(tmp_path / "conf" / "config.toml"))
    monkeypatch.setenv("PSABILL_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.sample(customers=6, seed=3) as sb:
        twice = sb.add_company("GLOBEX", "Globex Corporation")
        for name in ("A", "B"):
            sb.add_addition(sb.add_agreement(twice, name), "SEATS-STD", 40)
        acme = sb.add_company("ACME", "<b>Acme & Co</b>")
        sb.add_addition(sb.add_agreement(acme, "Managed"), "SEATS-STD", 3)
        yield sb
