"""`psabill run` at the edges: a manual run previews before it asks; an aborted scheduled run says why once."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any, Dict

import tomli_w

from psabill.sandbox.connectwise import Sandbox
from support.env import Env, free_port, write_old

DUE = "2026-11-27T06:00:00Z"


def _config(env: Env, psa: Dict[str, Any], usage: str) -> None:
    env.config.parent.mkdir(parents=True, exist_ok=True)
    write_old(env.config.parent / "usage.csv", usage)
    (env.config.parent / "psa-key").write_text("sandbox-private\n")
    os.chmod(env.config.parent / "psa-key", 0o600)
    env.config.write_text(tomli_w.dumps({
        "account": {"timezone": "UTC"},
        "schedule": {"mode": "daily", "hour": 6, "saved_at": datetime(2026, 11, 26, tzinfo=timezone.utc)},
        "source": {"kind": "csv", "path": "usage.csv"},
        "products": {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA"},
        "psa": {**psa, "private_key_file": "psa-key", "max_retries": 0},
    }))
    os.chmod(env.config, 0o600)


def _usage() -> str:
    rows = ["customer,sku,seats"]
    rows += [f"CUST{n:05d},{sku},{500 + n}" for n in range(1, 7) for sku in ("LastPass", "LastPass+MFA")]
    return "\n".join(rows + ["GLOBEX,LastPass,41", "Nobody Inc,LastPass,4"]) + "\n"


def _runs(env: Env) -> Any:
    return json.loads(env.run("history", "--json").output)


class TestAManualRunPreviewsBeforeItAsks:
    def test_it_shows_the_counts_and_the_first_ten_lines_then_runs_on_yes(self, env: Env, sandbox: Sandbox) -> None:
        import click

        from support.ledger import history_for

        _config(env, sandbox.config_section(), _usage())
        env.monkeypatch.setattr("psabill.cli.run.interactive", lambda: True)
        at_prompt = []
        real_confirm = click.confirm

        def confirm(*args: Any, **kwargs: Any) -> Any:
            # While the admin reads the plan it is stored (status "planned") and nothing is written.
            with history_for(env.state_dir, None) as ledger:
                at_prompt.extend((run.id, run.status, run.trigger) for run in ledger.runs())
            at_prompt.append(len(sandbox.patches()))
            return real_confirm(*args, **kwargs)

        env.monkeypatch.setattr(click, "confirm", confirm)
        result = env.run("run", input="y\n")
        assert result.exit_code == 1, result.output  # GLOBEX fails: two agreements hold the product
        out = result.output
        preview, _, after = out.partition("Write exactly this plan?")
        assert "Planned (run 1): 12 to update, 0 unchanged, 1 failed, 1 unmapped" in preview
        assert "nothing written" in preview
        assert "  would update CUST00001 / LastPass: " in preview and "-> 501" in preview
        assert sum(line.startswith("  would update ") for line in preview.splitlines()) == 10
        assert "  ... and 4 more (psabill history show 1 lists every line)" in preview
        assert at_prompt == [(1, "planned", "manual"), 0]
        assert len(sandbox.patches()) == 12
        # The "y" applies that same stored plan: one run, not a preview and then another.
        assert [(r["id"], r["trigger"]) for r in _runs(env)] == [(1, "manual")]
        assert "Run 1: partial" in after

    def test_answering_no_after_the_preview_writes_and_records_nothing(self, env: Env, sandbox: Sandbox) -> None:
        _config(env, sandbox.config_section(), _usage())
        env.monkeypatch.setattr("psabill.cli.run.interactive", lambda: True)
        result = env.run("run", input="n\n")
        assert result.exit_code == 0, result.output
        assert "Planned (run 1): 12 to update" in result.output
        assert "cancelled: nothing was changed" in result.output
        assert sandbox.patches() == []
        assert _runs(env) == []  # the planned run is discarded

    def test_an_unreachable_psa_ends_the_preview_without_asking(self, env: Env) -> None:
        _config(env, {"kind": "connectwise", "url": f"http://127.0.0.1:{free_port()}", "company": "msp",
                      "public_key": "pub", "client_id": "client"}, _usage())
        env.monkeypatch.setattr("psabill.cli.run.interactive", lambda: True)
        result = env.run("run", input="y\n")
        assert result.exit_code == 4
        assert "Write exactly this plan?" not in result.output
        assert result.output.splitlines()[-1].startswith("Error: ConnectWise at http://127.0.0.1:")
        # The run is recorded before it plans: it ends aborted, having written nothing.
        assert [(r["status"], r["trigger"]) for r in _runs(env)] == [("aborted", "manual")]

    def test_without_a_terminal_yes_is_still_required(self, env: Env, sandbox: Sandbox) -> None:
        _config(env, sandbox.config_section(), _usage())
        result = env.run("run")
        assert result.exit_code == 2
        assert result.output == "Error: refusing to change billing without a terminal: pass --yes (or --dry-run)\n"
        assert sandbox.requests == []


def test_an_aborted_scheduled_run_prints_its_reason_once_on_stderr_and_nothing_else(env: Env) -> None:
    from psabill.cli import cli
    from support.env import separate_runner

    port = free_port()
    _config(env, {"kind": "connectwise", "url": f"http://127.0.0.1:{port}", "company": "msp",
                  "public_key": "pub", "client_id": "client"}, _usage())
    result = separate_runner().invoke(cli, ["run", "--scheduled"], env={"PSABILL_NOW": DUE})
    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: ConnectWise at http://127.0.0.1:{port} is unreachable; nothing was written")
    assert [(r["status"], r["trigger"]) for r in _runs(env)] == [("aborted", "scheduled")]
