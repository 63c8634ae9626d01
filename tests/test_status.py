"""`psabill status`: the stable JSON keys, drift detection, and the human form."""

from __future__ import annotations

import json

from support.env import Env

SAVED = "2026-11-26T12:00:00+00:00"


def status(env: Env, now: str = SAVED) -> dict:
    result = env.run("status", "--json", now=now)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_status_json_has_the_documented_keys(env: Env) -> None:
    env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
            "--notify", "billing@msp.example", now=SAVED)
    data = status(env)
    assert {"schedule", "next_run", "cron", "last_run", "missed", "notify", "config", "state_dir",
            "account", "host_timezone"} <= set(data)
    assert data["next_run"] == {
        "account": "2026-12-01T09:00:00-05:00",
        "host": "2026-12-01T14:00:00+00:00",
        "utc": "2026-12-01T14:00:00+00:00",
        "left_seconds": 439200,
    }
    assert data["cron"]["installed"] is True
    assert data["cron"]["in_sync"] is True
    assert data["cron"]["lines"][0].startswith("0 13,14 * * 2 ")
    assert data["schedule"]["description"] == "Every Tuesday at 09:00 (America/New_York)"
    assert data["last_run"] is None
    assert data["notify"]["report"] == "emailed to 1 address(es) after each scheduled run"


def test_status_reports_drift_after_the_host_zone_changes(env: Env) -> None:
    env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York", now=SAVED)
    env.host("Europe/Berlin")
    data = status(env)
    assert data["cron"]["in_sync"] is False
    assert data["cron"]["expected"][0].startswith("0 14,15 * * 2 ")  # US and EU switch DST on different dates
    env.run("cron", "install", now=SAVED)
    assert status(env)["cron"]["in_sync"] is True


def test_status_without_addresses_says_no_report_is_sent(env: Env) -> None:
    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
    assert status(env)["notify"]["report"] == "no report is sent (no addresses configured)"


def test_status_shows_the_last_run(env: Env) -> None:
    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
    env.make_ready()
    env.run("run", "--scheduled", now="2026-11-27T06:00:00Z")
    last = status(env, "2026-11-27T07:00:00Z")["last_run"]
    assert last["occurrence"] == "2026-11-27T06:00:00+00:00"
    assert last["status"] == "success"


def test_status_text_reads_like_list_timers(env: Env) -> None:
    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
    out = env.run("status", now=SAVED).output.splitlines()
    assert out[0].split() == ["NEXT", "LEFT", "LAST", "PASSED", "STATUS"]
    assert out[1].startswith("Fri 2026-11-27 06:00 UTC ")
    assert "18h 0min" in out[1]


def test_status_without_a_config_still_answers(env: Env) -> None:
    data = status(env)
    assert data["schedule"] is None and data["next_run"] is None
    assert data["cron"] == {"target": str(env.crontab), "installed": False, "lines": [], "expected": [], "in_sync": True}
