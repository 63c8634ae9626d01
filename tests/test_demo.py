"""`psabill demo` runs the whole job end to end as a new user would: LastPass to the PSA."""

from __future__ import annotations

import email
import html
import json
import os
import subprocess
import sys
from email import policy
from pathlib import Path

from psabill.sandbox import book


def test_demo_runs_end_to_end_and_writes_the_results_email(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSABILL_")}
    env["HOME"] = str(tmp_path / "home")
    demo = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "psabill", "demo", "--dir", str(demo)],
                          capture_output=True, text=True, env=env, timeout=120)
    # The demo's two failures are on purpose: the run ends partial (exit 1) at worst, never held or aborted.
    assert proc.returncode in (0, 1), proc.stderr
    assert "== 4. Where everything is" in proc.stdout
    assert "LastPass stand-in at http://127.0.0.1:" in proc.stdout
    cases = book.build("connectwise", companies=12).cases  # the same deterministic book the demo served

    # The run it recorded: quantities written, and each failure and unmapped customer explained.
    shown = subprocess.run([sys.executable, "-m", "psabill", "--config", str(demo / "config.toml"), "--state-dir",
                            str(demo / "state"), "history", "show", "1", "--json"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["status"] in ("success", "partial") and run["trigger"] == "manual"
    assert run["counts"]["held"] == 0 and run["counts"]["updated"] > 0
    updated = [i for i in run["items"] if i["outcome"] == "updated"]
    assert all(i["old"] != i["new"] for i in updated)
    assert f"{len(updated)} quantities written" in proc.stdout
    problems = [i for i in run["items"] if i["outcome"] in ("failed", "unmapped")]
    assert {(i["customer"], i["outcome"]) for i in problems} == {
        (case.customer, case.what.split(":")[0]) for case in cases if not case.what.startswith("updated")}
    suspended = next(c.customer for c in cases if c.what.startswith("updated to 0"))
    assert [i["new"] for i in run["items"] if i["customer"] == suspended] == [0]
    for item in problems:
        assert item["message"] and item["hint"], item
        assert (f"  {item['outcome']:<9} {item['customer']} / {item['sku']}: {item['message']}. "
                f"Fix: {item['hint']}") in proc.stdout

    emails = list((demo / "outbox").glob("*.eml"))
    assert len(emails) == 1
    message = email.message_from_bytes(emails[0].read_bytes(), policy=policy.default)
    assert message["To"] == "billing@msp.example, ops@msp.example"
    # The report (text and HTML) plus every item as a CSV attachment.
    assert message.get_content_type() == "multipart/mixed"
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "psabill-run-000001.csv"
    assert all(case.customer in attachment.get_content() for case in cases)
    text = message.get_body(("plain",)).get_content()
    for item in problems:
        assert f"{item['customer']} " in text and item["message"] in " ".join(text.split()), item
    body = message.get_body(("html",)).get_content()
    assert all(html.escape(item["customer"], quote=False) in body for item in problems)
    # The user's real crontab and home were not touched.
    assert not (tmp_path / "home").exists()
    assert (demo / "crontab").read_text().count("# psabill[") == 3


def test_a_demo_that_fails_leaves_no_temp_dir_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSABILL_")}
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), PSABILL_NOW="not a time")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, "-m", "psabill", "demo"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and "PSABILL_NOW" in proc.stderr + proc.stdout
    assert list((tmp_path / "tmp").iterdir()) == []
