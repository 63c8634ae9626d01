"""``psabill check``: source, credentials and PSA reachability, without writing."""

from __future__ import annotations

import click

from psabill.cli.options import App, emit_json, json_option, pass_app


@click.command()
@json_option
@pass_app
def check(app: App, as_json: bool) -> None:
    """Verify the usage source, the PSA credentials and reachability; write nothing.

    \b
    Example:
      psabill check
    """
    from psabill import sources
    from psabill.errors import AbortError
    from psabill.psa.base import PsaError
    from psabill.psa.factory import make_client

    from psabill.config import readiness
    from psabill.errors import ConfigError

    settings = app.settings(must_exist=True)
    for warning in readiness.cron_env_warnings(settings):
        click.echo(f"Warning: {warning}", err=True)
    if readiness.missing(settings):
        raise ConfigError(readiness.not_ready_text(settings))
    assert settings.psa is not None
    products = settings.product_map
    rows = sources.read(settings.source, set(products), settings.path)
    customers = len({row.customer for row in rows})
    client = make_client(settings.psa, settings.path)
    try:
        psa = client.check()
    except PsaError as exc:
        raise AbortError(f"PSA check failed: {exc}") from None
    finally:
        client.close()
    result = {"source": {"rows": len(rows), "customers": customers}, "psa": psa, "api_requests": client.request_count}
    if as_json:
        emit_json(result)
        return
    click.echo(f"Source: {len(rows)} rows for {customers} customers")
    click.echo(f"PSA:    {psa}")
    click.echo("Nothing was written.")
