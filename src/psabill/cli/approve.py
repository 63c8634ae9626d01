"""``psabill approve RUN`` and ``psabill reject RUN``: decide on the changes a run held."""

import click

from psabill import clock
from psabill.cli.options import RUN_ID, App, Fail, complete_run_id, echo, json_option, pass_app
from psabill.cli.render import change, emit_json
from psabill.errors import ExitCode
from psabill.run import approve as decide
from psabill.text import clean


def _show(app: App, run_id: int, verb: str, yes: bool) -> bool:
    run = decide.load_held(app.paths, run_id)
    held = decide.held_items(run)
    if not held:
        return True  # the command itself says there is nothing to do
    echo(f"Run {run_id} holds {len(held)} change(s):")
    for item in held:
        echo(f"  [{item.rule}] {clean.name(item.customer)} / {clean.name(item.sku)}: {change(item.old, item.new)}: "
             f"{clean.message(item.message)}")
    if yes:
        return True
    if not click.get_text_stream("stdin").isatty():
        raise Fail(f"refusing to {verb} without a terminal: pass --yes", int(ExitCode.USAGE))
    return click.confirm(f"{verb.capitalize()} exactly these {len(held)} change(s)? This cannot be undone.")


@click.command()
@click.argument("run_id", metavar="RUN", type=RUN_ID, shell_complete=complete_run_id)
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@json_option
@pass_app
def approve(app: App, run_id: int, yes: bool, as_json: bool) -> None:
    """Write the changes run RUN held for approval, exactly as planned.

    Each line is read again first: one whose PSA quantity moved since the plan
    is refused, the others are written. The approval is recorded with who and
    when; approving again writes nothing.

    \b
    Example:
      psabill approve 42
    """
    if not _confirmed(app, run_id, "approve", yes, as_json, "cancelled: nothing was written"):
        return
    result = decide.approve(app.paths, clock.now, run_id, verbose=app.verbose)
    _report(result, as_json)
    if result.outcome is not None and result.outcome.exit_code != ExitCode.OK:
        raise Fail(result.outcome.error or f"run {run_id}: some approved changes were not written",
                   int(result.outcome.exit_code))


@click.command()
@click.argument("run_id", metavar="RUN", type=RUN_ID, shell_complete=complete_run_id)
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@json_option
@pass_app
def reject(app: App, run_id: int, yes: bool, as_json: bool) -> None:
    """Discard the changes run RUN held: nothing is written, and the rejection is recorded.

    \b
    Example:
      psabill reject 42
    """
    if not _confirmed(app, run_id, "reject", yes, as_json, "cancelled: nothing was changed"):
        return
    _report(decide.reject(app.paths, clock.now, run_id), as_json)


def _confirmed(app: App, run_id: int, verb: str, yes: bool, as_json: bool, cancelled: str) -> bool:
    """Whether to go on: the held changes shown and confirmed (or --yes); --json needs --yes."""
    if as_json:
        if not yes:
            raise Fail("--json needs --yes: there is no prompt to answer", int(ExitCode.USAGE))
        return True
    if not _show(app, run_id, verb, yes):
        echo(cancelled)
        return False
    return True


def _report(result: decide.Decision, as_json: bool) -> None:
    if as_json:
        emit_json({"schema": 1, "run": result.run.id, "action": result.action,
                   "items": [item.to_json() for item in result.items], "status": result.run.status})
        return
    if result.action == "nothing":
        echo(f"Run {result.run.id} holds nothing to decide (already approved or rejected): nothing was written.")
        return
    for item in result.items:
        echo(f"  {item.outcome:<9} {clean.name(item.customer)} / {clean.name(item.sku)}: {change(item.old, item.new)}"
             + (f": {clean.message(item.message)}" if item.message else ""))
    echo(f"Run {result.run.id}: {len(result.items)} held change(s) {result.action}; status now {result.run.status}.")
