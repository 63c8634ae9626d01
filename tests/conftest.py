"""Fixtures only: every path psabill touches points into tmp_path. Helpers live in tests/support/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import pytest

from psabill.sandbox.connectwise import Sandbox
from support.env import Env
from support.pg import fresh_schema, start_cluster


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    sandboxed = Env(tmp_path, monkeypatch)
    yield sandboxed
    sandboxed.close()


@pytest.fixture(autouse=True)
def _never_the_real_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even a test that forgets the env fixture must not edit the real crontab, config or home.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PSABILL_CRONTAB", str(tmp_path / "crontab"))
    monkeypatch.setenv("PSABILL_CONFIG", str(tmp_path / "conf" / "config.toml"))
    monkeypatch.setenv("PSABILL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PSABILL_STATE_URL", raising=False)  # nor a real shared ledger


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server URL: PSABILL_TEST_PG_URL, else a throwaway cluster started here.

    Tests that need it fail (never skip) under CI when PostgreSQL cannot start.
    """
    url = os.environ.get("PSABILL_TEST_PG_URL")
    if url:
        yield url
        return
    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        message = f"PostgreSQL could not start for the shared-ledger tests: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Optional[str]:
    """Each backend in turn: None (SQLite in the state dir) or a fresh PostgreSQL ledger, exported as
    PSABILL_STATE_URL so every psabill command (in process or a subprocess) uses it."""
    if request.param == "sqlite":
        return None
    url = fresh_schema(request.getfixturevalue("pg_server"))
    monkeypatch.setenv("PSABILL_STATE_URL", url)
    return url


@pytest.fixture
def pg_url(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh PostgreSQL ledger (not exported)."""
    return fresh_schema(pg_server)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.sample(customers=6, seed=3) as sb:
        twice = sb.add_company("GLOBEX", "Globex Corporation")
        for name in ("A", "B"):
            sb.add_addition(sb.add_agreement(twice, name), "SEATS-STD", 40)
        acme = sb.add_company("ACME", "<b>Acme & Co</b>")
        sb.add_addition(sb.add_agreement(acme, "Managed"), "SEATS-STD", 3)
        yield sb
