"""``psabill schedule export``: the units and the manifest as an admin gets them."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess

import pytest
import tomli_w

from psabill.sandbox.connectwise import Sandbox
from psabill.cli import cli
from psabill.schedule.export import CONFIG_PATH, STATE_DIR
from support.env import Env, configure, free_port, last_line, separate_runner, tomllib

SAVED = "2026-11-26T12:00:00Z"


@pytest.fixture
def weekly(env: Env) -> Env:
    assert env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
                   now=SAVED).exit_code == 0
    return env


def test_systemd_units_run_the_guard_with_absolute_config_and_state_dir(weekly: Env) -> None:
    out = weekly.tmp / "units"
    result = weekly.run("schedule", "export", "--format", "systemd", "--output", str(out), now=SAVED)
    assert result.exit_code == 0, result.output
    service = (out / "psabill.service").read_text()
    timer = (out / "psabill.timer").read_text()
    assert f"--config {weekly.config} --state-dir {weekly.state_dir} run --scheduled" in service
    assert "Type=oneshot" in service and f"ReadWritePaths=-{weekly.state_dir}" in service
    assert "OnCalendar=Tue *-*-* 09:00:00 America/New_York" in timer
    assert "Persistent=true" in timer and "AccuracySec=1s" in timer
    assert stat.S_IMODE((out / "psabill.timer").stat().st_mode) == 0o600
    # The unit may write only there, so the export makes it, private.
    assert stat.S_IMODE(weekly.state_dir.stat().st_mode) == 0o700


def set_transport(env: Env, notify: dict) -> None:
    data = tomllib.loads(env.config.read_text())
    data["notify"] = {**data.get("notify", {}), **notify}
    env.config.write_text(tomli_w.dumps(data))


def test_the_unit_hardening_follows_the_configured_transport(weekly: Env) -> None:
    set_transport(weekly, {"transport": "sendmail"})
    mail = weekly.run("schedule", "export", "--format", "systemd", now=SAVED).output
    assert "NoNewPrivileges=" not in mail and "ProtectSystem=full" in mail
    set_transport(weekly, {"transport": "file", "file": {"dir": str(weekly.tmp / "outbox")}})
    filed = weekly.run("schedule", "export", "--format", "systemd", now=SAVED).output
    assert "NoNewPrivileges=yes" in filed and "ProtectSystem=strict" in filed
    # The file transport writes its dir, so the strict sandbox must let it.
    assert f"ReadWritePaths=-{weekly.state_dir} -{weekly.tmp / 'outbox'}" in filed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs Debian's systemd (.ci/run installs it)")
def test_exported_units_pass_systemd_analyze_verify(weekly: Env) -> None:
    out = weekly.tmp / "units"
    assert weekly.run("schedule", "export", "--format", "systemd", "--output", str(out), now=SAVED).exit_code == 0
    done = subprocess.run(["systemd-analyze", "verify", str(out / "psabill.service"), str(out / "psabill.timer")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_without_output_both_units_are_printed_each_headed_by_its_name(weekly: Env) -> None:
    result = weekly.run("schedule", "export", "--format", "systemd", now=SAVED)
    assert result.exit_code == 0
    assert result.output.startswith("# psabill.service\n") and "\n# psabill.timer\n" in result.output


def test_the_kubernetes_manifest_needs_an_image(weekly: Env) -> None:
    result = weekly.run("schedule", "export", "--format", "kubernetes", now=SAVED)
    assert result.exit_code == 2
    assert last_line(result.output) == "Error: --format kubernetes needs --image (the container image that runs psabill)"


def test_the_kubernetes_manifest_is_json_in_the_account_zone_firing_hourly(weekly: Env) -> None:
    out = weekly.tmp / "cronjob.json"
    result = weekly.run("schedule", "export", "--format", "kubernetes", "--image", "registry.example/psabill:1",
                        "--output", str(out), now=SAVED)
    assert result.exit_code == 0, result.output
    spec = json.loads(out.read_text())["spec"]
    assert (spec["timeZone"], spec["concurrencyPolicy"], spec["startingDeadlineSeconds"]) == (
        "America/New_York", "Forbid", 3000)
    assert spec["schedule"] == "0 * * * *"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_the_pods_command_logs_the_run_to_stderr_for_kubectl_logs(env: Env) -> None:
    # The container's args, with the pod's paths swapped for this test's: the log reaches stderr.
    env.make_ready()
    assert env.run("schedule", "set", "--daily", "--hour", "9", "--timezone", "UTC", now=SAVED).exit_code == 0
    manifest = json.loads(env.run("schedule", "export", "--format", "kubernetes", "--image", "psabill:1",
                                  now=SAVED).output)
    args = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    args = [str(env.config) if a == CONFIG_PATH else str(env.state_dir) if a == STATE_DIR else a for a in args]
    result = separate_runner().invoke(cli, args, env={"PSABILL_NOW": "2026-11-27T09:00:05Z"},
                                      catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "run " in result.stderr and "success" in result.stderr, result.stderr
    quiet = separate_runner().invoke(cli, [a for a in args if a != "-v"], env={"PSABILL_NOW": "2026-11-28T09:00:05Z"},
                                     catch_exceptions=False)
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_exporting_without_a_schedule_is_a_config_error(env: Env) -> None:
    result = env.run("schedule", "export", "--format", "systemd")
    assert result.exit_code == 3
    assert "no schedule saved" in last_line(result.output)


def test_a_job_fired_on_both_passes_of_a_repeated_hour_runs_once(env: Env, sandbox: Sandbox) -> None:
    """Kubernetes fires 01:00 twice on a fall-back night; the guard runs the first and skips the second."""
    configure(env, sandbox, free_port())
    data = tomllib.loads(env.config.read_text())
    data["notify"] = {"emails": data["notify"]["emails"], "transport": "file", "file": {"dir": str(env.tmp / "out")}}
    env.config.write_text(tomli_w.dumps(data))
    assert env.run("schedule", "set", "--daily", "--hour", "1", now="2026-10-01T00:00:00Z").exit_code == 0
    # 2026-11-01 01:00 EDT is 05:00Z (first pass); 01:00 EST is 06:00Z (second pass).
    first = env.run("run", "--scheduled", now="2026-11-01T05:00:05Z")
    writes = len(sandbox.patches())
    second = env.run("run", "--scheduled", now="2026-11-01T06:00:05Z")
    assert second.exit_code == 0 and second.output == "" and first.output != ""
    assert len(sandbox.patches()) == writes > 0
    runs = json.loads(env.run("history", "--json", now="2026-11-01T07:00:00Z").output)
    assert [r["occurrence"] for r in runs if r["trigger"] == "scheduled"] == ["2026-11-01T05:00:00+00:00"]


def test_without_a_state_volume_the_pod_reads_the_ledger_url_from_the_secret(weekly: Env) -> None:
    result = weekly.run("schedule", "export", "--format", "kubernetes", "--image", "psabill:1", "--no-state-volume",
                        now=SAVED)
    assert result.exit_code == 0, result.output
    pod = json.loads(result.output)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["state"] == {"name": "state", "emptyDir": {}}
    assert pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "PSABILL_STATE_URL"
