"""`psabill demo` runs the whole job end to end as a new user would."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
from email import policy
from pathlib import Path


def test_demo_runs_end_to_end_and_writes_the_results_email(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSABILL_")}
    env["HOME"] = str(tmp_path / "home")
    demo = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "psabill", "demo", "--dir", str(demo)],
                          capture_output=True, text=True, env=env, timeout=120)
    # The demo's two failures are on purpose: the run ends partial (exit 1) at worst, never held or aborted.
    assert proc.returncode in (0, 1), proc.stderr
    assert "== 4. Where everything is" in proc.stdout
    assert "failed    GLOBEX / LastPass" in proc.stdout

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
    assert {(i["customer"], i["outcome"]) for i in problems} == {("GLOBEX", "failed"), ("<b>Acme & Co</b>", "unmapped")}
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
    assert "CUST00001,LastPass" in attachment.get_content()
    text = message.get_body(("plain",)).get_content()
    assert "CUST00001" in text and "GLOBEX" in text and "<b>Acme & Co</b>" in text
    for item in problems:
        assert f"{item['customer']} " in text and item["message"] in " ".join(text.split()), item
    html = message.get_body(("html",)).get_content()
    assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in html
    # The user's real crontab and home were not touched.
    assert not (tmp_path / "home").exists()
    assert (demo / "crontab").read_text().count("# psabill[") == 3
