"""Tests for psabill.schedule.export: systemd units and a Kubernetes CronJob.

The policy (``export.py``'s docstring): every occurrence of the schedule is a
firing of the timer and of the CronJob, in the account zone; short months
clamp; a wall time skipped by a spring-forward fires at psabill's shifted
time. Extra firings are allowed (the guard absorbs them), missing ones never.

The engines are the real ones where we can run them: ``systemd-analyze
calendar`` (run with TZ=UTC so every instant prints in UTC) for the timer,
and cronsim for the CronJob's schedule. cronsim, like Debian's cron, runs a
skipped wall time right after the change, which Kubernetes does not:
robfig/cron (what the CronJob controller uses) steps through real instants,
so a wall time that does not exist never matches. So the CronJob is also
checked against that rule directly: each occurrence's own wall time must
match the expression.

The year is 2027 (UTC), which crosses both DST changes in every zone here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Set
from zoneinfo import ZoneInfo

import pytest

from psabill.schedule.export import (
    CONFIG_PATH,
    STATE_DIR,
    exec_line,
    gap_shifts,
    kubernetes_cronjob,
    on_calendar,
    render_manifest,
    systemd_quote,
    systemd_units,
)
from psabill.schedule.rules import Schedule
from support.zones import UTC, occurrences_between, utc

try:  # cronsim >= 2.7 needs Python 3.10 at import time
    from cronsim import CronSim
except Exception:  # pragma: no cover - only on old interpreters
    CronSim = None

needs_cronsim = pytest.mark.skipif(CronSim is None, reason="cronsim is not importable on this Python")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package: systemd)"
)

YEAR_START = utc("2027-01-01T00:00")
YEAR_END = utc("2028-01-01T00:00")
SCHEMA = Path(__file__).parent / "support" / "schemas" / "k8s_cronjob.json"


def monthly(day: Any, hour: int, zone: str) -> Schedule:
    return Schedule(mode="monthly", day=day, hour=hour, zone=ZoneInfo(zone))


def weekly(weekday: int, hour: int, zone: str) -> Schedule:
    return Schedule(mode="weekly", weekday=weekday, hour=hour, zone=ZoneInfo(zone))


def daily(hour: int, zone: str) -> Schedule:
    return Schedule(mode="daily", hour=hour, zone=ZoneInfo(zone))


SUN, MON = 6, 0
# 2027's changes: New_York and St_Johns skip 02:00 on Mar 14, repeat 01:00 on
# Nov 7; London skips 01:00 on Mar 28, repeats it on Oct 31 (a month's last
# day); Sydney skips 02:00 on Oct 3, repeats it on Apr 4; Chatham skips
# 02:45-03:45 on Sep 26, repeats it on Apr 4. Kolkata and UTC never change.
PAIRS = [
    monthly(1, 0, "America/New_York"),
    monthly(14, 2, "America/New_York"),  # Mar 14 02:00 does not exist
    monthly(15, 3, "Europe/London"),
    monthly(29, 2, "Australia/Sydney"),
    monthly(30, 1, "Europe/London"),
    monthly(30, 2, "America/St_Johns"),
    monthly(31, 23, "Pacific/Chatham"),
    monthly("last", 1, "Europe/London"),  # Oct 31 01:00 happens twice
    monthly("last", 0, "UTC"),
    monthly(31, 3, "Asia/Kolkata"),
    weekly(SUN, 2, "America/New_York"),
    weekly(SUN, 1, "Europe/London"),
    weekly(SUN, 2, "Australia/Sydney"),
    weekly(SUN, 3, "Pacific/Chatham"),
    weekly(SUN, 2, "America/St_Johns"),
    weekly(MON, 0, "Asia/Kolkata"),
    daily(0, "UTC"),
    daily(1, "America/New_York"),  # Nov 7 01:00 happens twice
    daily(2, "America/New_York"),
    daily(1, "Europe/London"),
    daily(2, "Australia/Sydney"),
    daily(3, "Pacific/Chatham"),
    daily(23, "Asia/Kolkata"),
    daily(2, "America/St_Johns"),
]


def pair_id(schedule: Schedule) -> str:
    what = {"monthly": f"day{schedule.day}", "weekly": f"wd{schedule.weekday}", "daily": "daily"}
    return f"{what[schedule.mode]}-{schedule.hour:02d}h-{schedule.zone}"


def year_of(schedule: Schedule) -> List[datetime]:
    return occurrences_between(schedule, YEAR_START, YEAR_END - timedelta(microseconds=1))


# -- systemd: what the engine does ----------------------------------------------

_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$")


def systemd_firings(specs: List[str], start: datetime, iterations: int) -> Set[datetime]:
    """Every instant after ``start`` at which any of ``specs`` elapses, per systemd."""
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "calendar",
            f"--base-time={start.strftime('%Y-%m-%d %H:%M:%S')} UTC",
            f"--iterations={iterations}",
            *specs,
        ],
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C", "SYSTEMD_COLORS": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = set()
    for line in result.stdout.splitlines():
        match = _ELAPSE.search(line.strip())
        if match:
            found.add(datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC))
    assert len(found) >= 1, result.stdout
    return found


@needs_systemd
def test_systemd_skips_a_wall_time_that_does_not_exist_and_fires_a_repeated_one_once() -> None:
    # The behaviour the export works around: 02:00 on 2027-03-14 in New York
    # does not exist and systemd does not fire for it at all; 01:00 on
    # 2027-11-07 happens twice and systemd fires once, at the first (EDT) pass.
    start = utc("2027-03-12T00:00")
    two = systemd_firings(["*-*-* 02:00:00 America/New_York"], start, 4)
    assert sorted(two) == [utc("2027-03-12T07:00"), utc("2027-03-13T07:00"), utc("2027-03-15T06:00"),
                           utc("2027-03-16T06:00")]
    one = systemd_firings(["*-*-* 01:00:00 America/New_York"], utc("2027-11-06T00:00"), 3)
    assert sorted(one) == [utc("2027-11-06T05:00"), utc("2027-11-07T05:00"), utc("2027-11-08T06:00")]


@needs_systemd
@pytest.mark.parametrize("schedule", PAIRS, ids=pair_id)
def test_the_timer_fires_at_every_occurrence_of_a_year(schedule: Schedule) -> None:
    specs = on_calendar(schedule)
    per_day = max(len(spec.split()[-2].split(":")[0].split(",")) for spec in specs)
    per_year = {"daily": 367, "weekly": 54, "monthly": 13}[schedule.mode]
    fired = systemd_firings(specs, YEAR_START - timedelta(days=1), per_year * per_day)
    missing = [o.isoformat() for o in year_of(schedule) if o not in fired]
    assert not missing, f"{specs} misses {len(missing)}, first {missing[:5]}"


# -- systemd: the text ----------------------------------------------------------


def test_a_gap_hour_adds_the_shifted_hour_to_the_same_day_selector() -> None:
    assert on_calendar(daily(2, "America/New_York")) == ["*-*-* 02,03:00:00 America/New_York"]
    assert on_calendar(weekly(SUN, 1, "Europe/London")) == ["Sun *-*-* 01,02:00:00 Europe/London"]
    assert on_calendar(weekly(SUN, 3, "Pacific/Chatham")) == ["Sun *-*-* 03,04:00:00 Pacific/Chatham"]
    # Lord Howe springs forward by 30 minutes: 02:00 fires at 02:30.
    assert on_calendar(daily(2, "Australia/Lord_Howe")) == [
        "*-*-* 02:00:00 Australia/Lord_Howe",
        "*-*-* 02:30:00 Australia/Lord_Howe",
    ]


def test_an_hour_outside_every_gap_gets_one_line() -> None:
    assert on_calendar(daily(9, "America/New_York")) == ["*-*-* 09:00:00 America/New_York"]
    assert on_calendar(daily(2, "Asia/Kolkata")) == ["*-*-* 02:00:00 Asia/Kolkata"]
    assert gap_shifts(daily(2, "UTC")) == frozenset()


def test_short_months_use_the_last_day_selector() -> None:
    zone = "Asia/Kolkata"
    assert on_calendar(monthly(28, 9, zone)) == [f"*-*-28 09:00:00 {zone}"]
    assert on_calendar(monthly(29, 9, zone)) == [f"*-*-29 09:00:00 {zone}", f"*-02~01 09:00:00 {zone}"]
    assert on_calendar(monthly(30, 9, zone)) == [f"*-*-30 09:00:00 {zone}", f"*-02~01 09:00:00 {zone}"]
    assert on_calendar(monthly(31, 9, zone)) == [f"*-*~01 09:00:00 {zone}"]
    assert on_calendar(monthly("last", 9, zone)) == [f"*-*~01 09:00:00 {zone}"]


@needs_systemd
@pytest.mark.parametrize("day", [29, 30, 31, "last"])
def test_clamped_days_fire_on_each_months_day_over_a_leap_year(day: Any) -> None:
    schedule = monthly(day, 9, "UTC")
    start = utc("2028-01-01T00:00")
    fired = systemd_firings(on_calendar(schedule), start - timedelta(days=1), 30)
    expected = occurrences_between(schedule, start, utc("2028-12-31T23:59"))
    assert len(expected) == 12
    assert set(expected) <= fired
    assert utc("2028-02-29T09:00") in fired


def test_a_gap_that_moves_the_hour_to_the_next_date_fires_every_day_at_that_time() -> None:
    # Nuuk springs forward from 23:00 to 00:00: Saturday 23:00 fires at Sunday 00:00.
    schedule = weekly(5, 23, "America/Nuuk")
    assert gap_shifts(schedule) == frozenset({(1, datetime(2027, 1, 1, 0).time())})
    assert on_calendar(schedule) == [
        "Sat *-*-* 23:00:00 America/Nuuk",
        "*-*-* 00:00:00 America/Nuuk",
    ]


def write_units(directory: Path, units: Dict[str, str]) -> List[str]:
    paths = []
    for name, text in units.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def verify(paths: List[str]) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *paths],
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        capture_output=True,
        text=True,
        check=False,
    )


@needs_systemd
def test_systemd_verify_accepts_the_units(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "psabill", "--config", "/etc/psabill/config.toml", "--state-dir",
            "/var/lib/psabill"]
    units = systemd_units(monthly(31, 2, "America/New_York"), argv=argv, state_dir="/var/lib/psabill",
                          catch_up_seconds=86400)
    assert set(units) == {"psabill.service", "psabill.timer"}
    result = verify(write_units(tmp_path, units))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""


@needs_systemd
def test_systemd_verify_rejects_an_executable_that_does_not_exist(tmp_path: Path) -> None:
    # The check above is only worth something if verify looks at ExecStart.
    units = systemd_units(daily(9, "UTC"), argv=[str(tmp_path / "nope")], state_dir="/var/lib/psabill",
                          catch_up_seconds=86400)
    result = verify(write_units(tmp_path, units))
    assert result.returncode != 0
    assert "nope" in result.stderr


@needs_systemd
def test_odd_paths_and_arguments_survive_quoting(tmp_path: Path) -> None:
    # verify resolves the executable after unquoting and specifier expansion,
    # so a wrongly escaped space, % or $ makes it fail.
    odd = tmp_path / "my bin 100% $HOME"
    odd.mkdir()
    (odd / "psabill").symlink_to(sys.executable)
    argv = [str(odd / "psabill"), "--config", str(odd / 'c "1".toml'), "--state-dir", str(odd), ";", "it's"]
    units = systemd_units(daily(9, "UTC"), argv=argv, state_dir=str(odd), catch_up_seconds=86400)
    exec_start = next(line for line in units["psabill.service"].splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith(f'ExecStart="{tmp_path}/my bin 100%% $HOME/psabill" --config ')
    assert '"/my bin 100%% $$HOME/c \\"1\\".toml"'.replace("/my", f"{tmp_path}/my") in exec_start
    assert exec_start.endswith(' \\; "it\'s" run --scheduled')
    assert f'ReadWritePaths="-{tmp_path}/my bin 100%% $HOME"' in units["psabill.service"]
    result = verify(write_units(tmp_path, units))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_executable_path_systemd_would_refuse_is_refused() -> None:
    with pytest.raises(ValueError, match="quotes and backslashes"):
        exec_line(['/opt/"psabill"/bin/psabill'])
    with pytest.raises(ValueError, match="absolute"):
        exec_line(["psabill"])


def test_the_service_runs_argv_then_run_scheduled_in_a_sandbox() -> None:
    units = systemd_units(daily(9, "UTC"),
                          argv=["/usr/bin/psabill", "--config", "/etc/psabill/c.toml", "--state-dir", "/srv/ps"],
                          state_dir="/srv/ps", catch_up_seconds=3600, transport="smtp")
    service = units["psabill.service"].splitlines()
    assert "Type=oneshot" in service
    assert ("ExecStart=/usr/bin/psabill --config /etc/psabill/c.toml --state-dir /srv/ps run --scheduled"
            in service)
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=-/srv/ps", "PrivateTmp=yes",
                 "UMask=0077"):
        assert line in service
    assert any(line.startswith("Description=") for line in service)
    timer = units["psabill.timer"].splitlines()
    for line in ("Persistent=true", "AccuracySec=1s", "Unit=psabill.service",
                 "OnCalendar=*-*-* 09:00:00 UTC"):
        assert line in timer


def hardening(service: str) -> Dict[str, str]:
    pairs = (line.split("=", 1) for line in service.splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


@pytest.mark.parametrize("transport", ["sendmail", "smtp", "file"])
@needs_systemd
def test_the_units_for_each_transport_pass_verify(tmp_path: Path, transport: str) -> None:
    argv = [sys.executable, "-m", "psabill", "--config", "/etc/psabill/config.toml"]
    units = systemd_units(weekly(MON, 9, "Europe/London"), argv=argv, state_dir="/var/lib/psabill",
                          catch_up_seconds=86400, transport=transport, writable=["/var/spool/psabill mail"])
    result = verify(write_units(tmp_path, units))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""


def test_sendmail_keeps_what_postfix_and_exim_need_to_queue_mail() -> None:
    # Postfix's postdrop is setgid and Exim setuid: NoNewPrivileges (or RestrictSUIDSGID) stops
    # them, and ProtectSystem=strict leaves no writable /var/spool. The SMTP and file transports
    # need neither, so they keep the strict sandbox.
    argv = ["/usr/bin/psabill"]
    mail = hardening(systemd_units(daily(9, "UTC"), argv=argv, state_dir="/s", catch_up_seconds=60,
                                   transport="sendmail")["psabill.service"])
    assert "NoNewPrivileges" not in mail and "RestrictSUIDSGID" not in mail
    assert mail["ProtectSystem"] == "full" and mail["PrivateTmp"] == "yes"
    for transport in ("smtp", "file"):
        strict = hardening(systemd_units(daily(9, "UTC"), argv=argv, state_dir="/s", catch_up_seconds=60,
                                         transport=transport)["psabill.service"])
        assert strict["NoNewPrivileges"] == "yes" and strict["ProtectSystem"] == "strict"
        assert strict["RestrictSUIDSGID"] == "yes"
    with pytest.raises(ValueError, match="transport must be one of"):
        systemd_units(daily(9, "UTC"), argv=argv, state_dir="/s", catch_up_seconds=60, transport="pigeon")


def test_the_email_and_site_dirs_are_writable_and_a_missing_one_does_not_fail_the_unit() -> None:
    units = systemd_units(daily(9, "UTC"), argv=["/usr/bin/psabill"], state_dir="/var/lib/psabill",
                          catch_up_seconds=60, transport="file",
                          writable=["/var/lib/psabill", "/srv/mail out", "/srv/www/billing", "relative"])
    service = hardening(units["psabill.service"])
    # '-': a path that does not exist yet is skipped instead of failing with 226/NAMESPACE.
    assert service["ReadWritePaths"] == '-/var/lib/psabill "-/srv/mail out" -/srv/www/billing'
    assert service["UMask"] == "0077"


def test_systemd_quote_follows_unit_file_rules() -> None:
    assert systemd_quote("/usr/bin/psabill") == "/usr/bin/psabill"
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote("100%") == '"100%%"'
    assert systemd_quote("$HOME") == '"$$HOME"'
    assert systemd_quote("/a $HOME", variables=False) == '"/a $HOME"'
    assert systemd_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert systemd_quote("") == '""'
    assert systemd_quote(";") == "\\;"
    with pytest.raises(ValueError, match="line break"):
        systemd_quote("a\nb")


def test_relative_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        systemd_units(daily(9, "UTC"), argv=["psabill"], state_dir="/s", catch_up_seconds=60)
    with pytest.raises(ValueError, match="absolute"):
        systemd_units(daily(9, "UTC"), argv=["/usr/bin/psabill"], state_dir="state", catch_up_seconds=60)


# -- Kubernetes: the schedule ---------------------------------------------------


def cron_sets(expression: str) -> List[Optional[Set[int]]]:
    """minute, hour, day-of-month, month, day-of-week as sets (None for '*')."""
    fields = expression.split()
    assert len(fields) == 5, expression
    return [None if f == "*" else {int(v) for v in f.split(",")} for f in fields]


def robfig_matches(expression: str, wall: datetime) -> bool:
    """Whether a real instant's wall time matches, as robfig/cron decides (no DOM/DOW OR here)."""
    minute, hour, dom, month, dow = cron_sets(expression)
    assert dom is None or dow is None, "the export never restricts both"
    return (
        (minute is None or wall.minute in minute)
        and (hour is None or wall.hour in hour)
        and (dom is None or wall.day in dom)
        and (month is None or wall.month in month)
        and (dow is None or (wall.weekday() + 1) % 7 in dow)
    )


def schedule_of(schedule: Schedule, catch_up_seconds: int = 86400) -> str:
    return str(kubernetes_cronjob(schedule, image="psabill:1", catch_up_seconds=catch_up_seconds)["spec"]["schedule"])


@pytest.mark.parametrize("schedule", PAIRS, ids=pair_id)
def test_every_occurrence_has_a_wall_time_the_cronjob_matches(schedule: Schedule) -> None:
    expression = schedule_of(schedule)
    missing = [o.isoformat() for o in year_of(schedule)
               if not robfig_matches(expression, o.astimezone(schedule.zone))]
    assert not missing, f"{expression!r} misses {len(missing)}, first {missing[:5]}"


@needs_cronsim
@pytest.mark.parametrize("schedule", PAIRS, ids=pair_id)
def test_cronsim_fires_the_cronjob_at_every_occurrence_of_a_year(schedule: Schedule) -> None:
    expression = schedule_of(schedule)
    fired = set()
    for firing in CronSim(expression, (YEAR_START - timedelta(days=1)).astimezone(schedule.zone)):
        instant = firing.astimezone(UTC)
        if instant >= YEAR_END:
            break
        fired.add(instant)
    missing = [o.isoformat() for o in year_of(schedule) if o not in fired]
    assert not missing, f"{expression!r} misses {len(missing)}, first {missing[:5]}"


@pytest.mark.parametrize("schedule", [daily(2, "America/New_York"), monthly(31, 23, "Pacific/Chatham"),
                                      weekly(SUN, 1, "Europe/London"), daily(2, "Australia/Lord_Howe")],
                         ids=pair_id)
def test_after_each_occurrence_the_cronjob_fires_every_hour_of_catch_up(schedule: Schedule) -> None:
    # An outage at the occurrence gets a retry each hour until catch_up ends, as the crontab's
    # hourly line gives; a Job's own backoff (minutes) would not outlast a PSA outage.
    expression = schedule_of(schedule, catch_up_seconds=6 * 3600)
    for occurrence in year_of(schedule):
        retries = [occurrence + timedelta(hours=k) for k in range(1, 7)]
        late = [r.isoformat() for r in retries if not robfig_matches(expression, r.astimezone(schedule.zone))]
        assert not late, f"{expression!r} gives no retry at {late[:3]} after {occurrence.isoformat()}"


def test_the_deadline_lets_a_late_firing_go_to_the_next_hour() -> None:
    manifest = kubernetes_cronjob(daily(9, "UTC"), image="psabill:1", catch_up_seconds=86400)
    # The controller gives up on a firing older than this; the next hourly firing takes over.
    assert manifest["spec"]["startingDeadlineSeconds"] == 3000
    short = kubernetes_cronjob(daily(9, "UTC"), image="psabill:1", catch_up_seconds=600)
    assert short["spec"]["startingDeadlineSeconds"] == 600


@pytest.mark.parametrize(
    "schedule, expected",
    [
        (monthly(1, 9, "UTC"), "0 * * * *"),
        (monthly("last", 9, "UTC"), "0 * * * *"),
        (weekly(SUN, 2, "Australia/Sydney"), "0 * * * *"),
        (daily(3, "Pacific/Chatham"), "0 * * * *"),
        # Lord Howe springs forward by 30 minutes: 02:00 runs at 02:30 that day.
        (daily(2, "Australia/Lord_Howe"), "0,30 * * * *"),
        (daily(9, "Australia/Lord_Howe"), "0 * * * *"),
    ],
    ids=lambda v: v if isinstance(v, str) else pair_id(v),
)
def test_the_cronjob_fires_hourly_at_the_occurrences_minutes(schedule: Schedule, expected: str) -> None:
    assert schedule_of(schedule) == expected


# -- Kubernetes: the manifest ---------------------------------------------------


def strict(node: Any) -> Any:
    """The schema with unknown fields refused, as kubectl's strict field validation does."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def cronjob_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    source = schema.pop("_source")
    assert source["repo"] and source["path"] and re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    return jsonschema.Draft4Validator(strict(schema))


@pytest.mark.parametrize("state_claim", ["psabill-state", None])
def test_the_cronjob_validates_against_the_published_schema(state_claim: Optional[str]) -> None:
    manifest = kubernetes_cronjob(daily(2, "America/New_York"), image="ghcr.io/example/psabill:1.0",
                                  catch_up_seconds=86400, state_claim=state_claim)
    errors = sorted(cronjob_validator().iter_errors(manifest), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_strict_schema_refuses_an_unknown_field() -> None:
    manifest = kubernetes_cronjob(daily(2, "UTC"), image="psabill:1", catch_up_seconds=60)
    manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    manifest["spec"]["startingDeadlineSeconds"] = "soon"
    messages = [e.message for e in cronjob_validator().iter_errors(manifest)]
    assert any("comand" in m for m in messages)
    assert any("'soon'" in m for m in messages)


def pod_spec(manifest: Dict[str, Any]) -> Dict[str, Any]:
    spec: Dict[str, Any] = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


#: The Pod Security Standards' "restricted" profile, as published at
#: https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the Baseline rows that
#: apply to a plain pod, and every Restricted row), checked the way the admission controller
#: reads them: a container setting, or the pod's where the container leaves it unset.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(pod: Dict[str, Any]) -> List[str]:
    found = []
    pod_context = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        context = container.get("securityContext", {})
        name = container["name"]

        def setting(key: str) -> Any:
            return context.get(key, pod_context.get(key))

        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if setting("runAsNonRoot") is not True:
            found.append(f"{name}: runAsNonRoot must be true")
        if setting("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        if (setting("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            found.append(f"{name}: hostPort")
    return found


def test_the_pod_meets_pod_security_restricted() -> None:
    for claim in ("psabill-state", None):
        manifest = kubernetes_cronjob(daily(9, "UTC"), image="psabill:1", catch_up_seconds=60, state_claim=claim)
        assert restricted_violations(pod_spec(manifest)) == []


def test_the_restricted_check_catches_a_pod_the_profile_rejects() -> None:
    # The check above is worth something only if it fails the pod we used to export.
    manifest = kubernetes_cronjob(daily(9, "UTC"), image="psabill:1", catch_up_seconds=60)
    pod = pod_spec(manifest)
    del pod["securityContext"]
    pod["containers"][0].pop("securityContext")
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})
    problems = restricted_violations(pod)
    assert len(problems) == 5, problems


def test_the_pod_can_write_only_its_volumes_and_has_measured_resources() -> None:
    manifest = kubernetes_cronjob(daily(9, "UTC"), image="psabill:1", catch_up_seconds=60)
    [container] = pod_spec(manifest)["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # psabill writes its state, and Python and sqlite their temporary files: both are volumes.
    assert not mounts[STATE_DIR].get("readOnly") and "/tmp" in mounts
    assert pod_spec(manifest)["securityContext"]["fsGroup"] == 10001
    resources = container["resources"]
    assert resources["requests"]["memory"] and resources["limits"]["memory"]


def test_the_cronjob_runs_in_the_account_zone_with_forbid_and_logs_to_stderr() -> None:
    manifest = kubernetes_cronjob(monthly(31, 2, "Europe/London"), image="psabill:1", catch_up_seconds=7200)
    spec = manifest["spec"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "CronJob")
    assert spec["timeZone"] == "Europe/London"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    pod = pod_spec(manifest)
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    # -v: the run's log lines go to stderr as well as the log file, so `kubectl logs` shows them.
    assert container["command"] + container["args"] == [
        "psabill", "--config", CONFIG_PATH, "--state-dir", STATE_DIR, "run", "--scheduled", "-v",
    ]


def test_the_manifest_says_where_the_configs_paths_are_in_the_pod() -> None:
    manifest = kubernetes_cronjob(weekly(MON, 9, "Asia/Kolkata"), image="psabill:1", catch_up_seconds=60)
    notes = manifest["metadata"]["annotations"]
    assert CONFIG_PATH in notes["psabill/paths"] and "/run/secrets/psabill" in notes["psabill/paths"]
    assert notes["psabill/schedule"] == weekly(MON, 9, "Asia/Kolkata").describe()


def test_config_secrets_and_state_come_from_the_named_objects() -> None:
    manifest = kubernetes_cronjob(daily(9, "UTC"), image="psabill:1", name="acme", catch_up_seconds=60,
                                  config_map="acme-config", secret="acme-secrets", state_claim="acme-state")
    assert manifest["metadata"]["name"] == "acme"
    pod = pod_spec(manifest)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert volumes["config"]["configMap"] == {"name": "acme-config"}
    assert volumes["secrets"]["secret"]["secretName"] == "acme-secrets"
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": "acme-state"}
    assert mounts["config"]["mountPath"] == str(Path(CONFIG_PATH).parent) and mounts["config"]["readOnly"]
    assert mounts["secrets"]["readOnly"]
    assert mounts["state"]["mountPath"] == STATE_DIR
    assert "env" not in pod["containers"][0]


def test_without_a_claim_the_state_url_comes_from_the_secret() -> None:
    manifest = kubernetes_cronjob(daily(9, "UTC"), image="psabill:1", catch_up_seconds=60, state_claim=None)
    pod = pod_spec(manifest)
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert pod["containers"][0]["env"] == [
        {"name": "PSABILL_STATE_URL",
         "valueFrom": {"secretKeyRef": {"name": "psabill-secrets", "key": "PSABILL_STATE_URL"}}},
    ]


def test_render_manifest_is_json_kubectl_reads_and_round_trips_in_build_order() -> None:
    manifest = kubernetes_cronjob(weekly(MON, 9, "Asia/Kolkata"), image="psabill:1", catch_up_seconds=60)
    text = render_manifest(manifest)
    assert json.loads(text) == manifest
    assert list(json.loads(text)) == ["apiVersion", "kind", "metadata", "spec"]
    assert text.endswith("}\n")
