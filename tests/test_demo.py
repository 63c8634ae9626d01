"""`psabill demo` runs the whole job end to end as a new user would."""

from __future__ import annotations

import email
import os
import subprocess
import sys
from email import policy
from pathlib import Path


def test_demo_runs_end_to_end_and_writes_the_results_email(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSABILL_")}
    env["HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "psabill", "demo", "--dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "== 4. Where everything is" in proc.stdout
    assert "failed    GLOBEX / LastPass" in proc.stdout
    emails = list((tmp_path / "demo" / "outbox").glob("*.eml"))
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
    html = message.get_body(("html",)).get_content()
    assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in html
    # The user's real crontab and home were not touched.
    assert not (tmp_path / "home").exists()
    assert (tmp_path / "demo" / "crontab").read_text().count("# psabill[") == 3
