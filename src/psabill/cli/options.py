"""What every command shares: the app object, the output options and the renderers.

Commands import from here, never from each other and never from the root
group, so the command modules form no cycle.
"""

import os
from datetime import datetime, tzinfo
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TypeVar

import click

from psabill.config.paths import Paths

F = TypeVar("F", bound=Callable[..., Any])


class App(NamedTuple):
    """The root group's parsed options, handed to every command."""

    paths: Paths
    verbose: bool = False
    quiet: bool = False  # -q: action commands print nothing but errors

    def settings(self, *, check_addresses: bool = True, must_exist: bool = False) -> Any:
        """Load and validate the config once."""
        from psabill.config.settings import load

        return load(self.paths.config, check_addresses=check_addresses, must_exist=must_exist)

    def store(self) -> Any:
        """The history and run lock: ``[state] url`` / PSABILL_STATE_URL, else SQLite in the state dir."""
        from psabill.ledger.history import open_store, state_url

        return open_store(self.paths, state_url(self.settings(check_addresses=False).state_url))

    def history(self) -> Any:
        """The History of :meth:`store` (not yet opened); use it as a context manager."""
        return self.store().history


pass_app = click.make_pass_decorator(App)

# A run id as the history stores it (a signed 64-bit integer); anything else is a usage error.
RUN_ID = click.IntRange(1, 2 ** 63 - 1)


def echo(message: str = "", **kwargs: Any) -> None:
    """``click.echo`` for what an action command reports; silent under ``-q``.

    Errors never go through here (they are exceptions), and neither does
    JSON, which is asked for explicitly.
    """
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(App) if ctx is not None else None
    if app is not None and app.quiet:
        return
    click.echo(message, **kwargs)


def _set_on_app(field_name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        # App is frozen: the option swaps in a copy for this command (and any it invokes).
        if value and isinstance(ctx.obj, App):
            change: Dict[str, Any] = {field_name: True}
            ctx.obj = ctx.obj._replace(**change)

    return callback


def verbosity_options(command: click.Command) -> click.Command:
    """Accept ``-v``/``-q`` after ``command`` and each of its subcommands, as well as before."""
    names = {opt for param in command.params for opt in getattr(param, "opts", ())}
    if "-v" not in names:
        command.params.append(click.Option(["-v", "--verbose"], is_flag=True, expose_value=False,
                                           callback=_set_on_app("verbose"), help="Echo the log to stderr."))
    if "-q" not in names:
        command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False,
                                           callback=_set_on_app("quiet"), help="Print only errors."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            verbosity_options(sub)
    return command


def colour_wanted() -> bool:
    """Colour on a terminal; never with NO_COLOR set; forced by CLICOLOR_FORCE=1 (for pipes to less -R)."""
    import sys

    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("CLICOLOR_FORCE", "0") not in ("", "0"):
        return True
    return sys.stdout.isatty()


GREEN = ("ok", "in sync", "success")
RED = ("OUT OF SYNC", "failed", "aborted")
YELLOW = ("partial", "interrupted")


def paint(text: str, colour: bool) -> str:
    """``text`` in green or red when ``colour`` and it names a good or bad state."""
    if not colour:
        return text
    for word in RED:
        if text.startswith(word):
            return click.style(text, fg="red", bold=True if word == "OUT OF SYNC" else None)
    for word in YELLOW:
        if text.startswith(word):
            return click.style(text, fg="yellow")
    for word in GREEN:
        if text.startswith(word):
            return click.style(text, fg="green")
    return text


# -- shell completion ------------------------------------------------------------


def complete_zone(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """IANA zone names starting with what was typed (ignoring case)."""
    from zoneinfo import available_timezones

    prefix = incomplete.lower()
    return sorted(z for z in available_timezones() if z.lower().startswith(prefix))


def complete_weekday(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """mon..sun."""
    from psabill.schedule.rules import WEEKDAYS

    return [day for day in WEEKDAYS if day.startswith(incomplete.lower())]


def complete_run_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """Run ids from the history, newest first, read-only (a missing or locked db completes nothing)."""
    import sqlite3

    from click.shell_completion import CompletionItem

    root = ctx.find_root()
    paths = root.obj.paths if isinstance(root.obj, App) else Paths.resolve(
        root.params.get("config_path"), root.params.get("state_dir"))
    if not paths.db.exists():
        return []
    try:
        conn = sqlite3.connect(f"{paths.db.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)
        try:
            rows = conn.execute("SELECT id, started_at, trigger, status FROM runs ORDER BY id DESC LIMIT 200").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [CompletionItem(str(run_id), help=f"{started} {trigger} {status}")
            for run_id, started, trigger, status in rows if str(run_id).startswith(incomplete)]


class Fail(click.ClickException):
    """A domain error on its way out: ``Error: <one line>`` and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def json_option(func: F) -> F:
    """``--json``: print JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    import json  # not at module level: the cron path never prints JSON

    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def render_report(report: Any) -> None:
    """A run's outcome and its changes and failures, as text."""
    from psabill.text.redact import neutralize as shown  # names and messages come from outside: inert on a terminal

    dry = report.trigger == "dry-run"
    verb = "Dry run" if dry else "Run"
    echo(f"{verb} {report.run_id}: {report.status}" + (f" ({shown(report.message)})" if report.message else ""))
    counts = {("would update" if dry and k == "updated" else k): v for k, v in report.counts.items()}
    echo("  " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {report.api_requests} API requests")
    for item in report.items:
        who = f"{shown(item.customer)} / {shown(item.sku)}"
        if item.outcome == "planned":
            echo(f"  would update {who}: {change(item.old, item.new)}")
        elif item.outcome == "updated":
            echo(f"  {who}: {change(item.old, item.new)}")
        elif item.outcome in ("failed", "unmapped"):
            hint = f" Fix: {shown(item.hint)}" if item.hint else ""
            echo(f"  {item.outcome.upper()} {who}: {shown(item.message)}.{hint}")
    if report.trigger == "dry-run":
        echo("Nothing was written to the PSA (dry run).")
    if report.run_id is not None:
        echo(f"Details: psabill history show {report.run_id}")


def change(old: Optional[int], new: Optional[int]) -> str:
    """``3 -> 5``; a side that is unknown is shown as ``n/a`` (never ``None``)."""
    return f"{'n/a' if old is None else old} -> {'n/a' if new is None else new}"


# -- times in text output ------------------------------------------------------------
# Text shows a time in the account zone, with the host's wall time in brackets when the
# host zone reads differently at that instant; JSON keeps ISO-8601 in all zones.


def zones(settings: Any) -> Tuple[tzinfo, tzinfo]:
    """(account zone, host zone): ``[account] timezone``, else the host's, as the schedule does."""
    from psabill import clock

    host = clock.host_zone()
    name = getattr(getattr(settings, "account", None), "timezone", None)
    return (clock.load_zone(name) if name else host), host


def _host_bracket(instant: datetime, zone: tzinfo, host: tzinfo, seconds: bool) -> str:
    here, there = instant.astimezone(zone), instant.astimezone(host)
    if (here.utcoffset(), here.tzname()) == (there.utcoffset(), there.tzname()):
        return ""
    return f" (host {there.strftime('%a %H:%M' + (':%S' if seconds else ''))} {there.tzname()})"


def show_occurrence(instant: Any, zone: tzinfo, host: tzinfo) -> str:
    """``Tue 2026-12-01 09:00 EST (host Tue 14:00 UTC)``: a scheduled time (``instant`` may be ISO text)."""
    moment = _instant(instant)
    if moment is None:
        return str(instant)
    here = moment.astimezone(zone)
    return f"{here.strftime('%a %Y-%m-%d %H:%M')} {here.tzname()}" + _host_bracket(moment, zone, host, False)


def show_moment(instant: Any, zone: tzinfo, host: tzinfo) -> str:
    """``2026-12-01 09:00:07 -0500 (host Tue 14:00:07 UTC)``: when something happened, to the second."""
    moment = _instant(instant)
    if moment is None:
        return "-" if instant is None else str(instant)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z") + _host_bracket(moment, zone, host, True)


def _instant(value: Any) -> Optional[datetime]:
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def render_status(data: Any, now: Any, colour: bool = False) -> None:
    """The ``status`` text view of a Status JSON document; states in red/green when ``colour``."""
    from psabill import clock

    def out(text: str) -> None:
        click.echo(text, color=True if colour else None)

    from psabill.text.files import human_duration

    host = clock.load_zone(data["host_timezone"])
    zone = clock.load_zone(data["account"]["timezone"]) if data["account"]["timezone"] else host

    def when(iso: str) -> str:  # the table shows the account zone only; the lines below add the host's
        moment = datetime.fromisoformat(iso).astimezone(zone)
        return f"{moment.strftime('%a %Y-%m-%d %H:%M')} {moment.tzname()}"

    nxt = data["next_run"]
    last = data["last_run"]
    next_col = when(nxt["account"]) if nxt else "n/a"
    left_col = human_duration(nxt["left_seconds"]) if nxt else "n/a"
    last_col = when(last["started_at"]) if last else "n/a"
    passed_col = (
        human_duration((now - datetime.fromisoformat(last["started_at"])).total_seconds()) + " ago"
        if last else "n/a"
    )
    out(f"{'NEXT':<30} {'LEFT':<10} {'LAST':<30} {'PASSED':<12} STATUS")
    out(f"{next_col:<30} {left_col:<10} {last_col:<30} {passed_col:<12} "
        + paint(last["status"] if last else "n/a", colour))
    out("")
    sched = data["schedule"]
    if sched is None:
        out("Schedule:   none saved (psabill schedule set --help)")
    else:
        out(f"Schedule:   {sched['description']}" + ("" if sched["enabled"] else " [disabled]"))
    out(f"Zones:      account {data['account']['timezone'] or 'n/a'}, host {data['host_timezone']}")
    if nxt:
        out(f"Next run:   {show_occurrence(nxt['account'], zone, host)}")
    if last:
        out(f"Last run:   {last['status']} ({last['trigger']}) at {show_moment(last['started_at'], zone, host)} "
            f"on host {last.get('host') or '-'}")
    cron = data["cron"]
    state = "installed" if cron["installed"] else "not installed"
    sync = paint("in sync" if cron["in_sync"] else "OUT OF SYNC: run 'psabill cron install'", colour)
    out(f"Cron:       {state}, {sync} ({cron['target']})")
    for line in cron["lines"]:
        out(f"            {line}")
    retrying = data.get("retrying")
    if retrying:
        nxt_try = retrying["next_attempt"]
        out(f"Retrying:   {retrying['occurrence']}: retrying, next attempt at "
            + (f"{nxt_try['account']} (host {nxt_try['host']})" if nxt_try else "none left before catch-up ends")
            + f"; {retrying['attempts']} attempt(s), last: {retrying['last_reason']}")
    for missed in data.get("missed_details") or [{"occurrence": m, "reason": ""} for m in data["missed"]]:
        out(f"Missed:     {missed['occurrence']}" + (f" ({missed['reason']})" if missed["reason"] else ""))
    out(f"Report:     {data['notify']['report']}")
    for gap in data["not_ready"]:
        out(f"Not ready:  {gap} (add it to the config; see 'psabill check')")
    for warning in data["warnings"]:
        out(f"Warning:    {warning}")
    ledger = data["ledger"]
    out(f"Ledger:     {ledger['kind']} {ledger['where']}" + (" (shared)" if ledger["shared"] else ""))
    out(f"Config:     {data['config']}")
    out(f"State dir:  {data['state_dir']}")


def warn_not_ready(settings: Any) -> None:
    """``schedule set`` / ``check``: say what is still missing and which secrets cron will lack (stderr)."""
    from psabill.config import readiness

    for gap in readiness.missing(settings):
        echo(f"Not ready: {gap}: scheduled runs will fail until it is added to {settings.path}", err=True)
    for warning in readiness.cron_env_warnings(settings):
        echo(f"Warning: {warning}", err=True)
