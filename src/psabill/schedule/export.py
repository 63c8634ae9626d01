"""systemd units and a Kubernetes CronJob that fire at every occurrence, and hourly to retry: pure.

Nothing here reads the clock or touches a file; the caller writes the text.
Both exports fire in the *account* zone (a systemd ``OnCalendar=`` with a
trailing zone name, a CronJob's ``spec.timeZone``), so no host-zone
arithmetic is needed. Extra firings are harmless: ``psabill run --scheduled``
only runs an occurrence that is due and has not run, so every rule below
errs towards firing more, never less.

Policy (each rule has a test in ``tests/test_export.py``):

1. **Every occurrence fires.** Each occurrence of the schedule (psabill's
   rules in :mod:`psabill.schedule.rules`) is an instant at which the timer or
   CronJob fires. ``start`` and ``saved_at`` are not encoded: the guard
   enforces them.
2. **Short months.** systemd: day 29 and 30 fire on that day plus Feb's last
   day (``*-02~01``); day 31 and ``last`` fire on every month's last day
   (``*-*~01``), which is the 31st wherever a 31st exists. The CronJob fires
   hourly (rule 5), so every day is covered.
3. **Spring-forward gaps.** Both systemd and Kubernetes (robfig/cron) skip a
   wall time that does not exist; psabill fires it at the wall time shifted
   by the gap (02:00 -> 03:00). Where the schedule's hour falls in a gap of
   the account zone, the shifted wall time is added to the same day selector
   (a systemd line; a CronJob minute), so it fires every period at both
   times. Gaps are found by resolving the hour on every day of
   :data:`GAP_SCAN` exactly as :meth:`Schedule.resolve` does; the window runs
   past 2037, where tzdata repeats each zone's current rule for ever. A gap
   that pushes the hour onto the next date (America/Nuuk's 23:00 jumps to
   00:00) adds the shifted time on every day for systemd.
4. **Repeated hour.** systemd fires a repeated wall time once, at its first
   pass, as psabill does. Kubernetes fires it at both passes; the guard runs
   the occurrence at the first and skips the second.
5. **Retries.** Both also fire every hour (systemd at :00, the CronJob at the
   occurrence's minutes), so a failed or partial run is retried within
   catch-up, as the crontab's hourly line does; a cluster whose tzdata differs
   from psabill's by an hour still reaches the occurrence an hour later.
"""

from __future__ import annotations

import re
from datetime import date, time, timedelta, timezone, tzinfo
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from psabill.schedule.rules import Schedule

GAP_SCAN = (date(2024, 1, 1), date(2040, 1, 1))  # [first, end) local dates
SYSTEMD_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SERVICE = "psabill.service"
TIMER = "psabill.timer"

# Where the CronJob's container finds things.
CONFIG_DIR = "/etc/psabill"
CONFIG_PATH = f"{CONFIG_DIR}/config.toml"
SECRETS_DIR = "/run/secrets/psabill"  # point *_file config keys here
STATE_DIR = "/var/lib/psabill"
STATE_URL_KEY = "PSABILL_STATE_URL"
HISTORY_LIMIT = 3

_SAFE = re.compile(r"[A-Za-z0-9_./:=@+,-]+")


# -- when to fire ---------------------------------------------------------------


def zone_name(zone: tzinfo) -> str:
    """The IANA name of a schedule's zone; a zone without one raises ValueError."""
    key = getattr(zone, "key", None)
    if isinstance(key, str) and key:
        return key
    if zone is timezone.utc:
        return "UTC"
    raise ValueError(f"zone {zone!r} has no IANA name; systemd and Kubernetes need one")


def gap_shifts(schedule: Schedule) -> FrozenSet[Tuple[int, time]]:
    """The (days later, local time) at which a gap moves the schedule's hour (rule 3)."""
    wanted = time(schedule.hour)
    found: Set[Tuple[int, time]] = set()
    d, end = GAP_SCAN
    while d < end:
        local = schedule.resolve(d).astimezone(schedule.zone)
        if local.time() != wanted or local.date() != d:
            found.add(((local.date() - d).days, local.time().replace(tzinfo=None)))
        d += timedelta(days=1)
    return frozenset(found)


def _day_selectors(schedule: Schedule) -> List[str]:
    """systemd date specs matching the schedule's local dates (rule 2)."""
    if schedule.mode == "daily":
        return ["*-*-*"]
    if schedule.mode == "weekly":
        return [f"{SYSTEMD_WEEKDAYS[int(schedule.weekday or 0)]} *-*-*"]
    if schedule.day == "last" or schedule.day == 31:
        return ["*-*~01"]
    day = int(schedule.day or 1)
    if day >= 29:
        return [f"*-*-{day:02d}", "*-02~01"]
    return [f"*-*-{day:02d}"]


def _clock_specs(times: Sequence[time]) -> List[str]:
    """``HH,HH:MM:00`` specs, one per distinct minute, covering exactly ``times``."""
    by_minute: Dict[int, Set[int]] = {}
    for t in times:
        by_minute.setdefault(t.minute, set()).add(t.hour)
    return [
        f"{','.join(f'{h:02d}' for h in sorted(hours))}:{minute:02d}:00"
        for minute, hours in sorted(by_minute.items())
    ]


def on_calendar(schedule: Schedule) -> List[str]:
    """The ``OnCalendar=`` values that fire at every occurrence (rules 1-4)."""
    zone = zone_name(schedule.zone)
    shifts = gap_shifts(schedule)
    same_day = [time(schedule.hour)] + sorted(t for days, t in shifts if days == 0)
    specs = [
        f"{selector} {clock} {zone}"
        for selector in _day_selectors(schedule)
        for clock in _clock_specs(same_day)
    ]
    later = sorted(t for days, t in shifts if days != 0)
    specs += [f"*-*-* {clock} {zone}" for clock in _clock_specs(later)]
    return specs


# -- systemd --------------------------------------------------------------------


def systemd_quote(word: str, *, variables: bool = True) -> str:
    """One word for a unit file line; ``variables`` when the line expands ``$NAME``."""
    if any(ch in word for ch in "\n\r\0"):
        raise ValueError(f"cannot put {word!r} in a unit file: it contains a line break or NUL")
    if word == ";" and variables:
        return "\\;"  # a lone ';' would separate commands
    escaped = word.replace("%", "%%")
    if variables:
        escaped = escaped.replace("$", "$$")
    if _SAFE.fullmatch(word):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def exec_line(argv: Sequence[str]) -> str:
    """An ``ExecStart=`` value running ``argv`` exactly, per systemd's rules."""
    if not argv or not argv[0].startswith("/"):
        raise ValueError(f"argv must start with an absolute executable path, not {list(argv[:1])!r}")
    if any(ch in argv[0] for ch in "\"'\\"):
        raise ValueError(f"systemd refuses quotes and backslashes in an executable path: {argv[0]!r}")
    # systemd expands $NAME in the arguments but not in the executable path.
    words = [systemd_quote(argv[0], variables=False)]
    words += [systemd_quote(word) for word in argv[1:]]
    return " ".join(words)


#: What each transport needs of the service's sandbox. A local MTA's sendmail queues mail by a
#: setgid (Postfix's postdrop) or setuid (Exim) helper that writes under /var/spool: it needs
#: privileges the unit must not take away (NoNewPrivileges=yes makes Postfix's postdrop retry
#: "Permission denied" for ever, and Exim fail), and a /var it can write (ProtectSystem=strict
#: makes both fail). SMTP and file transports need neither, so they get the whole hardening.
HARDENING = {
    "sendmail": ("ProtectSystem=full", "PrivateTmp=yes", "ProtectHome=read-only"),
    "smtp": ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=read-only",
             "PrivateDevices=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes"),
    "file": ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=read-only",
             "PrivateDevices=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes"),
}


def systemd_units(
    schedule: Schedule, *, argv: Sequence[str], state_dir: str, catch_up_seconds: int, transport: str = "smtp",
    writable: Sequence[str] = (),
) -> Dict[str, str]:
    """``psabill.service`` and ``psabill.timer`` running ``argv run --scheduled``.

    The hardening fits ``transport`` (see :data:`HARDENING`). The state dir and
    every path in ``writable`` (an email file dir, the site dir) are writable;
    each is prefixed ``-``, so a path that does not exist yet never fails the
    unit's namespace (226/NAMESPACE): psabill then creates it. The export
    itself creates the state dir too (``psabill schedule export``).
    """
    if not state_dir.startswith("/"):
        raise ValueError(f"state_dir must be absolute, not {state_dir!r}")
    if catch_up_seconds < 1:
        raise ValueError(f"catch_up_seconds must be positive, not {catch_up_seconds!r}")
    if transport not in HARDENING:
        raise ValueError(f"transport must be one of {', '.join(HARDENING)}, not {transport!r}")
    command = exec_line([*argv, "run", "--scheduled"])
    paths = [state_dir, *(p for p in writable if p.startswith("/"))]
    # The '-' goes inside any quotes: systemd unquotes the word, then reads the prefix.
    readwrite = " ".join(systemd_quote("-" + p, variables=False) for p in dict.fromkeys(paths))
    why = ("# sendmail queues through a setgid/setuid helper: no NoNewPrivileges, and /var stays writable"
           if transport == "sendmail" else f"# {transport} transport: nothing here needs privileges or /var")
    service = "\n".join(
        [
            "# Managed by psabill: one scheduled billing update.",
            "[Unit]",
            "Description=psabill scheduled billing update",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart={command}",
            "UMask=0077",
            why,
            *HARDENING[transport],
            f"ReadWritePaths={readwrite}",
            "",
        ]
    )
    timer = "\n".join(
        [
            "# Managed by psabill. It fires at every occurrence of:",
            f"#   {schedule.describe()}",
            "# and sometimes more (the guard in 'run --scheduled' runs only what is due).",
            f"# A firing missed while down runs at boot; psabill runs an occurrence up to"
            f" {catch_up_seconds} s late.",
            "[Unit]",
            "Description=psabill billing update schedule",
            "",
            "[Timer]",
            *(f"OnCalendar={spec}" for spec in on_calendar(schedule)),
            "# Hourly: retries a failed or partial run within catch-up; otherwise the guard exits at once.",
            f"OnCalendar=*-*-* *:00:00 {zone_name(schedule.zone)}",
            "Persistent=true",
            "AccuracySec=1s",
            f"Unit={SERVICE}",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return {SERVICE: service, TIMER: timer}


# -- Kubernetes -----------------------------------------------------------------


UID = 10001  # the image's user (Dockerfile): numeric, so the kubelet can check runAsNonRoot
#: Peak RSS measured at 20,000 customers is within 150 MB (docs/performance.md): the request covers a
#: 5,000-customer book, the limit the largest measured, with room; an OOM kill would cost an occurrence.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "384Mi"}}


def kubernetes_cronjob(
    schedule: Schedule,
    *,
    image: str,
    name: str = "psabill",
    catch_up_seconds: int,
    config_map: str = "psabill-config",
    secret: str = "psabill-secrets",
    state_claim: Optional[str] = "psabill-state",
) -> Dict[str, Any]:
    """A batch/v1 CronJob manifest; ``state_claim=None`` keeps state in PSABILL_STATE_URL.

    It fires every hour at the schedule's minutes, in the account zone: at each
    occurrence, and at every hour after it, so a failed or partial run is
    retried within catch-up as the crontab's hourly line does, and a cluster
    whose tzdata moves a firing by an hour still reaches the occurrence. The
    guard runs only what is due; every other firing exits at once. The pod
    meets the Pod Security "restricted" standard (non-root, no privilege
    escalation, no capabilities, RuntimeDefault seccomp, read-only root), logs
    to stderr too (``-v``: ``kubectl logs`` shows the run), and has memory
    requests and limits from the measured peak.
    """
    if catch_up_seconds < 1:
        raise ValueError(f"catch_up_seconds must be positive, not {catch_up_seconds!r}")
    mounts: List[Dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: List[Dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "secrets", "secret": {"secretName": secret, "defaultMode": 0o400}},
        (
            {"name": "state", "persistentVolumeClaim": {"claimName": state_claim}}
            if state_claim is not None
            else {"name": "state", "emptyDir": {}}
        ),
        {"name": "tmp", "emptyDir": {}},
    ]
    container: Dict[str, Any] = {
        "name": "psabill",
        "image": image,
        "command": ["psabill"],
        "args": ["--config", CONFIG_PATH, "--state-dir", STATE_DIR, "run", "--scheduled", "-v"],
        "volumeMounts": mounts,
        "resources": RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if state_claim is None:
        container["env"] = [
            {
                "name": STATE_URL_KEY,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": STATE_URL_KEY}},
            }
        ]
    labels = {"app.kubernetes.io/name": "psabill", "app.kubernetes.io/instance": name}
    minutes = sorted({t.minute for t in [time(schedule.hour)] + [t for _, t in gap_shifts(schedule)]})
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": labels, "annotations": {
            "psabill/schedule": schedule.describe(),
            "psabill/paths": f"config {CONFIG_PATH} (ConfigMap {config_map}); secrets under {SECRETS_DIR} "
                             f"(Secret {secret}: point *_file keys there); state {STATE_DIR}",
        }},
        "spec": {
            "schedule": f"{','.join(str(m) for m in minutes)} * * * *",
            "timeZone": zone_name(schedule.zone),
            "concurrencyPolicy": "Forbid",
            # A firing later than this is left to the next hourly one.
            "startingDeadlineSeconds": min(catch_up_seconds, 3000),
            "successfulJobsHistoryLimit": HISTORY_LIMIT,
            "failedJobsHistoryLimit": HISTORY_LIMIT,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    # The hourly firings retry within catch-up; the Job itself tries once more at most.
                    "backoffLimit": 1,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "securityContext": {
                                "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "containers": [container],
                            "volumes": volumes,
                        },
                    },
                },
            },
        },
    }


def render_manifest(manifest: Dict[str, Any]) -> str:
    """The manifest as JSON: valid YAML 1.2 too, which ``kubectl apply -f`` reads either way."""
    import json  # only the export renders a manifest

    return json.dumps(manifest, indent=2) + "\n"
