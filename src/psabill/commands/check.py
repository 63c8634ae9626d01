"""``psabill check``: source, credentials and PSA reachability, without writing."""

from __future__ import annotations

import click

from psabill.cli import emit_json, get_ctx, json_option


@click.command()
@json_option
def check(as_json: bool) -> None:
    """Verify the usage source, the PSA credentials and reachability; write nothing.

    \b
    Example:
      psabill check
    """
    from psabill import sources
    from psabill.errors import AbortError
    from psabill.psa.base import PsaError
    from psabill.psa.factory import make_client

    ctx = get_ctx()
    cfg = ctx.load_config(must_exist=True)
    rows = sources.read(cfg)
    customers = len({row.customer for row in rows})
    client = make_client(cfg)
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
