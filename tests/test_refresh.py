"""The refresh engine against real loopback PSAs: the ConnectWise sandbox and
the Autotask stand-in. Nothing of psabill is mocked; the assertions read the
servers' own data and request logs.
"""

from __future__ import annotations

import random
import re
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from psabill.config.secrets import resolve
from psabill.config.settings import Settings as Config
from psabill.errors import AbortError, ConfigError
from psabill.outcomes import FAILED, PLANNED, UNCHANGED, UNKNOWN, UNMAPPED, UPDATED
from psabill.psa import autotask
from psabill.psa.autotask import PER_ENDPOINT
from psabill.psa.base import PsaClient, open_client
from psabill.report import Item, Run as RunModel
from psabill.run import engine, mapping
from psabill.sandbox.autotask import AutotaskStandin
from psabill.sandbox.connectwise import Sandbox
from psabill.sandbox.server import LoopbackServer, Request
from psabill.sources.rows import UsageRow
from support.env import settings_for

CW_PRODUCTS = {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA"}
AT_PRODUCTS = {"LastPass": "501", "LastPass+MFA": "502"}
FAST = {"backoff": 0.01, "max_wait": 0.05}  # retries in milliseconds, not seconds


def write_config(tmp_path: Path, psa: Dict[str, Any], products: Dict[str, str],
                 mapping: Optional[str] = None) -> Config:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    data: Dict[str, Any] = {"products": products, "psa": {"max_retries": 1, "timeout": 5, **psa}}
    if mapping is not None:
        (conf / "mapping.csv").write_text(mapping)
        data["mapping"] = {"file": "mapping.csv"}
    return settings_for(conf / "config.toml", data)


def cw_config(tmp_path: Path, sb: Sandbox, mapping: Optional[str] = None, **psa: Any) -> Config:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "cw.key").write_text(sb.private_key + "\n")
    (tmp_path / "conf" / "cw.key").chmod(0o600)
    section = {**sb.config_section(), "private_key_file": "cw.key", **psa}
    return write_config(tmp_path, section, CW_PRODUCTS, mapping)


class Refresh:
    """One refresh, planned then applied the way a run does: the report, every item as it ended
    (``recorded``, with the threads it ended on and the progress), and every batch announced before it was sent."""

    def __init__(self, cfg: Config, client: PsaClient) -> None:
        self.cfg = cfg
        self.client = client
        self.report = RunModel(trigger="manual", started_at=datetime.now(timezone.utc))
        self.recorded: List[Item] = []
        self.threads: Set[str] = set()
        self.progress: List[Tuple[int, int]] = []
        self.sent: List[List[int]] = []

    def __call__(self, rows: List[UsageRow], *, dry_run: bool = False, halt: Any = lambda: False,
                 sending: Any = None) -> "Refresh":
        cfg, client = self.cfg, self.client
        self.report.trigger = "dry-run" if dry_run else "manual"
        self.report.psa = client.kind
        where = f"{client.terms.psa} at {cfg.psa.url}" if cfg.psa.url else client.terms.psa
        try:
            items = engine.plan(client, rows, products=cfg.product_map, pins=mapping.load(cfg.mapping.file),
                                where=where)
            self.report.items = items
            todo = [item for item in items if item.outcome == PLANNED] if not dry_run else []
            for item in items:
                if item not in todo:
                    self._ended(item, len(rows))

            def announce(batch: Any) -> None:
                self.sent.append([target.key for target in batch])
                if sending is not None:
                    sending(batch)

            for item, written in engine.apply(client, todo, products=cfg.product_map, halt=halt, sending=announce):
                engine.settle(item, written)
                self._ended(item, len(rows))
        finally:
            self.report.api_requests = client.request_count
        return self

    def _ended(self, item: Item, total: int) -> None:
        self.threads.add(threading.current_thread().name)
        self.recorded.append(item)
        self.progress.append((len(self.recorded), total))

    def by(self, customer: str, sku: str = "LastPass") -> Item:
        return next(i for i in self.report.items if i.customer == customer and i.sku == sku)

    def outcomes(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for item in self.report.items:
            counts[item.outcome] = counts.get(item.outcome, 0) + 1
        return counts


def Run(cfg: Config, client: PsaClient, rows: List[UsageRow], **options: Any) -> Refresh:  # noqa: N802
    """Plan and apply ``rows`` (see :class:`Refresh`)."""
    return Refresh(cfg, client)(rows, **options)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """An empty sandbox: these tests add exactly the companies each rule needs (conftest's has samples)."""
    with Sandbox() as sb:
        yield sb


def iter_patches(server: LoopbackServer) -> List[Request]:
    """What a run actually wrote."""
    return [r for r in server.requests if r.method == "PATCH"]


def active_agreement(sb: Sandbox, identifier: str) -> int:
    return next(int(a["id"]) for a in sb.agreements.values() if a["company"]["identifier"] == identifier
                and a["agreementStatus"] == "Active" and not a["cancelledFlag"])


def addition(sb: Sandbox, agreement_id: int, product: str) -> Tuple[int, Dict[str, Any]]:
    """The addition billing today: effective by now, not cancelled by now (the sample cancels some later)."""
    today = datetime.now(timezone.utc).date().isoformat()
    return next((xid, x) for xid, x in sb.additions[agreement_id].items()
                if x["product"]["identifier"] == product and x["effectiveDate"][:10] <= today
                and (not x["cancelledDate"] or x["cancelledDate"][:10] > today))


# -- the acceptance scenario ---------------------------------------------------


def build_book(sb: Sandbox, customers: int, seed: int = 7) -> Tuple[List[UsageRow], Dict[Tuple[str, str], str], str]:
    """Usage rows for the sample book, with every kind of trouble mixed in.

    Returns the rows, the expected failure reason per (customer, SKU), and the mapping file text.
    """
    rng = random.Random(seed)
    rows: List[UsageRow] = []
    failures: Dict[Tuple[str, str], str] = {}
    mapping = ["customer,psa_company,agreement"]
    for n in range(1, customers + 1):
        ident = f"CUST{n:05d}"
        aid = active_agreement(sb, ident)
        customer, column = ident, None
        kind = n % 50
        if kind == 3:  # a second active agreement also bills the standard SKU
            other = sb.add_agreement(int(sb.agreements[aid]["company"]["id"]), f"Second site {n}")
            sb.add_addition(other, "SEATS-STD", 5)
            failures[(customer, "LastPass")] = "2 active agreements of CUST"
        elif kind == 4:  # the MFA product was never added to the agreement
            xid, _ = addition(sb, aid, "SEATS-MFA")
            del sb.additions[aid][xid]
            failures[(customer, "LastPass+MFA")] = "product 'SEATS-MFA' (SKU LastPass+MFA) is not on agreement"
        elif kind == 5:  # someone added the standard product twice
            sb.add_addition(aid, "SEATS-STD", 9)
            failures[(customer, "LastPass")] = "has 2 additions for product 'SEATS-STD'"
        elif kind == 7:  # matched by company name, ignoring case
            customer = f"customer {n:05d} ltd"
        elif kind == 8:  # matched through the source's psa_company column
            customer, column = f"Branch office {n}", ident
        elif kind == 9:  # ambiguous, but pinned in the mapping file
            other = sb.add_agreement(int(sb.agreements[aid]["company"]["id"]), f"Second site {n}")
            sb.add_addition(other, "SEATS-STD", 5)
            mapping.append(f"{customer},{ident},{aid}")
        for sku, product in CW_PRODUCTS.items():
            current = int(addition(sb, aid, product)[1]["quantity"]) if kind != 4 or sku == "LastPass" else 0
            seats = current if n % 4 == 0 else rng.randint(0, 300)
            rows.append(UsageRow(customer, sku, seats, column))
    for n in range(1, customers // 25 + 1):
        rows.append(UsageRow(f"Ghost customer {n}", "LastPass", 3))  # no PSA company at all
        failures[(f"Ghost customer {n}", "LastPass")] = "unmapped"
    lonely = sb.add_company("LONELY", "Lonely Co")
    assert lonely
    rows.append(UsageRow("LONELY", "LastPass", 4))
    failures[("LONELY", "LastPass")] = "LONELY has no active agreement in ConnectWise"
    rows.append(UsageRow("Misfiled", "LastPass", 4, "NO-SUCH-CO"))
    failures[("Misfiled", "LastPass")] = "PSA company 'NO-SUCH-CO' (from the source's psa_company column) not found"
    return rows, failures, "\n".join(mapping) + "\n"


def test_acceptance_every_mapped_quantity_ends_equal_to_its_seat_count(tmp_path: Path) -> None:
    with Sandbox.sample(customers=300, seed=3) as sb:
        rows, failures, mapping = build_book(sb, 300)
        cfg = cw_config(tmp_path, sb, mapping=mapping)
        sb.clear_log()
        client = open_client(cfg.psa, **FAST)
        run = Run(cfg, client, rows)

        report = run.report
        assert [(i.customer, i.sku) for i in report.items] == [(r.customer, r.sku) for r in rows]
        assert len(run.recorded) == len(rows) and {id(i) for i in run.recorded} == {id(i) for i in report.items}
        assert run.threads == {threading.main_thread().name}  # every item settles on the run's own thread
        assert run.progress[-1] == (len(rows), len(rows))
        announced = [key for batch in run.sent for key in batch]  # each write's intent, once, before it is sent
        assert sorted(announced) == sorted(i.seq for i in report.items if i.outcome == UPDATED)

        seats = {(r.customer, r.sku): r.seats for r in rows}
        for item in report.items:
            expected = failures.get((item.customer, item.sku))
            if expected is None:
                assert item.outcome in (UPDATED, UNCHANGED), (item.customer, item.sku, item.message)
                assert sb.quantity(int(item.agreement or 0), int(item.line or 0)) == seats[(item.customer, item.sku)]
                assert item.new == seats[(item.customer, item.sku)]
            elif expected == "unmapped":
                assert item.outcome == UNMAPPED and item.customer in item.message and item.hint
            else:
                assert item.outcome == FAILED, (item.customer, item.sku, item.outcome)
                assert expected in item.message, item.message
                assert item.hint
        assert "pin one in the mapping file" in run.by("CUST00003").hint

        patches = list(iter_patches(sb))
        updated = [i for i in report.items if i.outcome == UPDATED]
        assert len(patches) == len(updated) > 0
        patched = {r.path.rsplit("/", 1)[1] for r in patches}
        assert all(i.line not in patched for i in report.items if i.outcome == UNCHANGED)
        assert report.count(UNCHANGED) >= 100

        # Bulk reads: one page of companies, one of agreements, one additions read per agreement needed.
        counts = sb.counts
        assert counts["GET company/companies"] == 1
        assert counts["GET finance/agreements"] == 1
        assert report.api_requests == sb.total == client.request_count
        assert counts["GET login/companyinfo"] == 1  # the config names the host: the codebase is discovered
        assert report.api_requests == 3 + counts["GET finance/agreements/{id}/additions"] + len(patches)
        assert report.psa == "connectwise"

        # Running again writes nothing: every quantity already matches.
        sb.clear_log()
        again = Run(cfg, client, rows)
        assert again.report.count(UPDATED) == 0
        assert list(iter_patches(sb)) == []
        assert again.report.count(FAILED) == len([f for f in failures.values() if f != "unmapped"])
        client.close()


def test_a_rerun_after_the_psa_died_mid_run_finishes_the_job(tmp_path: Path) -> None:
    with Sandbox.sample(customers=60, seed=5) as sb:
        rng = random.Random(1)
        rows = [UsageRow(f"CUST{n:05d}", sku, rng.randint(300, 400)) for n in range(1, 61) for sku in CW_PRODUCTS]
        cfg = cw_config(tmp_path, sb)
        client = open_client(cfg.psa, **FAST)
        # The dry run also discovered the codebase (companyinfo); the same client never asks again.
        reads = Run(cfg, client, rows, dry_run=True).report.api_requests - 1
        assert sb.counts.get("PATCH finance/agreements/{id}/additions/{id}") is None

        sb.die_after(reads + 10)  # the PSA vanishes after ten writes
        first = Run(cfg, client, rows)
        assert 0 < first.report.count(UPDATED) <= 10
        # Writes on the wire when it vanished may have landed: unknown (read back by the next run), never
        # assumed; the rest were not written. None is counted as written.
        failed = [i for i in first.report.items if i.outcome in (FAILED, UNKNOWN)]
        assert len(failed) == len(rows) - first.report.count(UPDATED)
        assert all(i.transient for i in failed)
        assert all(i.hint and ("unreachable" in i.message or "not written" in i.message)
                   for i in failed if i.outcome == FAILED)
        assert all(i.message.startswith("sent, but no answer came") for i in failed if i.outcome == UNKNOWN)

        sb.revive()
        second = Run(cfg, open_client(cfg.psa, **FAST), rows)
        assert second.report.count(FAILED) == 0
        assert second.report.count(UPDATED) == len(failed)
        assert second.report.count(UNCHANGED) == first.report.count(UPDATED)
        for item in second.report.items:
            assert sb.quantity(int(item.agreement or 0), int(item.line or 0)) == item.new


def test_dry_run_plans_changes_and_writes_nothing(tmp_path: Path) -> None:
    with Sandbox.sample(customers=20, seed=2) as sb:
        aid = active_agreement(sb, "CUST00001")
        xid, line = addition(sb, aid, "SEATS-STD")
        current = int(line["quantity"])
        rows = [UsageRow("CUST00001", "LastPass", current + 5), UsageRow("CUST00002", "LastPass", 0),
                UsageRow("CUST00003", "LastPass", int(addition(sb, active_agreement(sb, "CUST00003"),
                                                                "SEATS-STD")[1]["quantity"]))]
        cfg = cw_config(tmp_path, sb)
        run = Run(cfg, open_client(cfg.psa, **FAST), rows, dry_run=True)
        item = run.by("CUST00001")
        assert (item.outcome, item.old, item.new, item.line) == (PLANNED, current, current + 5, str(xid))
        assert run.by("CUST00002").outcome == PLANNED
        assert run.by("CUST00003").outcome == UNCHANGED
        assert list(iter_patches(sb)) == []
        assert sb.quantity(aid, xid) == current


def test_writes_run_concurrently_within_the_configured_bound(tmp_path: Path) -> None:
    with Sandbox.sample(customers=40, seed=2, latency_ms=15) as sb:
        rows = [UsageRow(f"CUST{n:05d}", "LastPass", 1000 + n) for n in range(1, 41)]
        cfg = cw_config(tmp_path, sb, concurrency=4)
        run = Run(cfg, open_client(cfg.psa, **FAST), rows)
        assert run.report.count(UPDATED) == 40
        peak = sb.max_inflight["PATCH finance/agreements/{id}/additions/{id}"]
        assert 2 <= peak <= 4
        assert 2 <= sb.max_inflight["GET finance/agreements/{id}/additions"] <= 4


# -- mapping rules, one failure at a time ----------------------------------------


class TestMapping:
    def test_the_mapping_file_pins_company_and_agreement_over_everything_else(self, tmp_path: Path,
                                                                                sandbox: Sandbox) -> None:
        acme = sandbox.add_company("ACME", "Acme Corp")
        main = sandbox.add_agreement(acme, "Main")
        backup = sandbox.add_agreement(acme, "Backup")
        sandbox.add_addition(main, "SEATS-STD", 3)
        target = sandbox.add_addition(backup, "SEATS-STD", 3)
        other = sandbox.add_company("Acme Corporation", "Acme Corporation")  # what the name alone would pick
        sandbox.add_addition(sandbox.add_agreement(other), "SEATS-STD", 1)
        cfg = cw_config(tmp_path, sandbox, mapping="customer,psa_company,agreement\nacme corporation,ACME,backup\n")
        run = Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("Acme Corporation", "LastPass", 8, "ignored")])
        item = run.by("Acme Corporation")
        assert (item.outcome, item.psa_company, item.agreement, item.line) == (UPDATED, "ACME", str(backup),
                                                                                str(target))
        assert sandbox.quantity(backup, target) == 8

    def test_a_bad_mapping_file_aborts_before_any_request(self, tmp_path: Path, sandbox: Sandbox) -> None:
        cfg = cw_config(tmp_path, sandbox, mapping="customer,psa_company\nAcme,ACME\nACME,OTHER\n")
        with pytest.raises(AbortError, match=r"mapping file .*mapping.csv line 3: customer 'ACME' is already "
                                             r"mapped on line 2$"):
            Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("Acme", "LastPass", 1)])
        assert sandbox.total == 0

    def test_a_pinned_agreement_that_is_not_active_fails_with_a_hint(self, tmp_path: Path, sandbox: Sandbox) -> None:
        acme = sandbox.add_company("ACME", "Acme")
        sandbox.add_addition(sandbox.add_agreement(acme), "SEATS-STD", 1)
        cfg = cw_config(tmp_path, sandbox, mapping="customer,psa_company,agreement\nAcme,ACME,999\n")
        item = Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("Acme", "LastPass", 2)]).by("Acme")
        assert item.outcome == FAILED
        assert item.message == "pinned agreement '999' is not an active agreement of ACME"
        assert "mapping file" in item.hint

    def test_two_companies_with_one_name_are_ambiguous(self, tmp_path: Path, sandbox: Sandbox) -> None:
        for ident in ("ACME1", "ACME2"):
            sandbox.add_addition(sandbox.add_agreement(sandbox.add_company(ident, "Acme")), "SEATS-STD", 1)
        cfg = cw_config(tmp_path, sandbox)
        item = Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("ACME", "LastPass", 2)]).by("ACME")
        assert item.outcome == FAILED and item.message.startswith("2 ConnectWise companies match 'ACME': ACME1")
        assert "pin" in item.hint

    def test_two_rows_aiming_at_one_line_both_fail_and_nothing_is_written(self, tmp_path: Path,
                                                                         sandbox: Sandbox) -> None:
        acme = sandbox.add_company("ACME", "Acme")
        sandbox.add_addition(sandbox.add_agreement(acme), "SEATS-STD", 1)
        cfg = cw_config(tmp_path, sandbox)
        run = Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("Acme", "LastPass", 2),
                                                  UsageRow("Acme East", "LastPass", 3, "ACME")])
        assert run.outcomes() == {FAILED: 2}
        assert "is the target of 2 rows (Acme/LastPass, Acme East/LastPass)" in run.by("Acme East").message
        assert list(iter_patches(sandbox)) == []

    def test_a_sku_missing_from_products_fails_that_row_only(self, tmp_path: Path, sandbox: Sandbox) -> None:
        acme = sandbox.add_company("ACME", "Acme")
        sandbox.add_addition(sandbox.add_agreement(acme), "SEATS-STD", 1)
        cfg = cw_config(tmp_path, sandbox)
        run = Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("ACME", "Legacy", 2), UsageRow("ACME", "LastPass", 2)])
        assert run.by("ACME", "Legacy").message == "SKU 'Legacy' is not mapped in [products]"
        assert run.by("ACME").outcome == UPDATED

    def test_no_rows_means_no_requests(self, tmp_path: Path, sandbox: Sandbox) -> None:
        cfg = cw_config(tmp_path, sandbox)
        run = Run(cfg, open_client(cfg.psa, **FAST), [])
        assert run.report.items == [] and sandbox.total == 0


# -- API errors ---------------------------------------------------------------


class TestApiErrors:
    def test_refused_credentials_abort_naming_the_url_but_not_the_key(self, tmp_path: Path, sandbox: Sandbox) -> None:
        sandbox.add_company("ACME", "Acme")
        cfg = cw_config(tmp_path, sandbox)
        sandbox.private_key = "rotated-key"
        run = Refresh(cfg, open_client(cfg.psa, **FAST))
        with pytest.raises(AbortError) as info:
            run([UsageRow("ACME", "LastPass", 1)])
        recorded = run.recorded
        message = info.value.message
        assert message.startswith(f"ConnectWise at {sandbox.url} refused the credentials; nothing was written")
        assert "sandbox-private" not in message and "rotated-key" not in message
        # companyinfo (no credentials), then the 401s: the identifier and the name query run side by side
        # (the second may still be on the wire when the first's refusal aborts the plan; closing the client
        # waits for it).
        run.client.close()
        assert recorded == [] and run.client.request_count in (2, 3)
        assert sandbox.counts.get("GET company/companies", 0) == run.client.request_count - 1

    def test_an_unreachable_psa_aborts_naming_the_url(self, tmp_path: Path) -> None:
        sb = Sandbox()
        url = sb.url
        cfg = cw_config(tmp_path, sb)
        sb.stop()
        with pytest.raises(AbortError, match=rf"^ConnectWise at {url} is unreachable; nothing was written: "):
            Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("ACME", "LastPass", 1)])

    def test_a_failing_company_list_aborts(self, tmp_path: Path, sandbox: Sandbox) -> None:
        cfg = cw_config(tmp_path, sandbox)
        sandbox.fail(400, endpoint="company/companies")
        with pytest.raises(AbortError, match=r"failed while reading companies and agreements; nothing was written"):
            Run(cfg, open_client(cfg.psa, **FAST), [UsageRow("ACME", "LastPass", 1)])

    def test_an_unreadable_agreement_fails_only_its_customers(self, tmp_path: Path) -> None:
        with Sandbox.sample(customers=5) as sb:
            cfg = cw_config(tmp_path, sb, concurrency=1)
            sb.fail(400, endpoint="additions", method="GET")
            rows = [UsageRow(f"CUST{n:05d}", "LastPass", 999) for n in range(1, 6)]
            run = Run(cfg, open_client(cfg.psa, **FAST), rows)
            assert run.outcomes() == {FAILED: 1, UPDATED: 4}
            failed = next(i for i in run.report.items if i.outcome == FAILED)
            assert failed.message.startswith(f"reading additions of agreement #{failed.agreement} failed: GET ")
            assert "HTTP 400" in failed.message

    def test_a_refused_write_fails_that_item_and_the_rest_carry_on(self, tmp_path: Path) -> None:
        with Sandbox.sample(customers=6) as sb:
            cfg = cw_config(tmp_path, sb)
            sb.fail(400, method="PATCH", body={"code": "InvalidObject", "message": "Addition is locked"})
            rows = [UsageRow(f"CUST{n:05d}", "LastPass", 999) for n in range(1, 7)]
            run = Run(cfg, open_client(cfg.psa, **FAST), rows)
            assert run.outcomes() == {FAILED: 1, UPDATED: 5}
            failed = next(i for i in run.report.items if i.outcome == FAILED)
            assert "HTTP 400" in failed.message and "Addition is locked" in failed.message
            assert failed.old is not None and failed.hint


# -- Autotask -------------------------------------------------------------------

TODAY = date(2026, 11, 26)


def at_config(tmp_path: Path, standin: AutotaskStandin, monkeypatch: pytest.MonkeyPatch, **psa: Any) -> Config:
    monkeypatch.setenv("PSABILL_TEST_AT_SECRET", standin.secret)
    section = {"kind": "autotask", "username": standin.username, "integration_code": standin.integration_code,
               "secret_env": "PSABILL_TEST_AT_SECRET", **psa}
    return write_config(tmp_path, section, AT_PRODUCTS)


def at_client(cfg: Config, standin: AutotaskStandin) -> PsaClient:
    return open_client(cfg.psa, zone_lookup=standin.url, billing_date=TODAY, **FAST)


def at_book(standin: AutotaskStandin, customers: int) -> Tuple[List[UsageRow], Dict[str, int]]:
    rng = random.Random(4)
    rows: List[UsageRow] = []
    services: Dict[str, int] = {}
    for n in range(1, customers + 1):
        company = standin.add_company(f"Account {n}", f"A{n:04d}")
        contract = standin.add_contract(company)
        for sku, service in AT_PRODUCTS.items():
            csid = standin.add_service(contract, int(service), rng.randint(1, 50))
            services[f"A{n:04d}/{sku}"] = csid
            rows.append(UsageRow(f"A{n:04d}", sku, rng.randint(1, 50) if n % 3 else standin.units(csid)))
    return rows, services


def test_autotask_rerun_after_a_partial_run_never_double_counts(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autotask, "IN_BATCH", 7)  # several write batches from a small book
    with AutotaskStandin(today=TODAY) as standin:
        rows, services = at_book(standin, 30)
        initial = {key: standin.units(csid) for key, csid in services.items()}
        cfg = at_config(tmp_path, standin, monkeypatch)
        Run(cfg, at_client(cfg, standin), rows, dry_run=True)
        assert standin.adjustments == []

        announced: List[int] = []

        def vanish_at_the_third_batch(batch: Any) -> None:
            announced.append(len(batch))
            if len(announced) == 3:  # the first batch is verified, the second posted: the PSA goes
                standin.die_after(0)

        first = Run(cfg, at_client(cfg, standin), rows, sending=vanish_at_the_third_batch)
        assert first.report.psa == "autotask"
        assert 0 < first.report.count(UPDATED) < len(rows) - first.report.count(UNCHANGED)
        assert all(i.transient for i in first.report.items if i.outcome in (FAILED, UNKNOWN))

        standin.revive()
        second = Run(cfg, at_client(cfg, standin), rows)
        assert second.report.count(FAILED) == 0
        third = Run(cfg, at_client(cfg, standin), rows)
        assert third.report.count(UPDATED) == 0

        posted: Dict[Tuple[int, int], int] = {}
        for adjustment in standin.adjustments:
            key = (adjustment["contractID"], adjustment["serviceID"])
            posted[key] = posted.get(key, 0) + adjustment["unitChange"]
            assert adjustment["effectiveDate"] == "2026-11-01T00:00:00"
        for row in rows:
            csid = services[f"{row.customer}/{row.sku}"]
            assert standin.units(csid) == row.seats
            service = standin.tables["ContractServices"][csid]
            assert posted.get((service["contractID"], service["serviceID"]), 0) == row.seats - initial[
                f"{row.customer}/{row.sku}"]


def test_autotask_reads_each_batch_before_its_posts_verifies_it_after_them_and_posts_batches_in_turn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each batch's units read is started a batch early; the stand-in's log (in order of completion) shows
    # it still lands before the batch's first post, the batch's verify lands after its last post, and a
    # batch posts only once the batch before has posted (its verify may still be running then).
    monkeypatch.setattr(autotask, "IN_BATCH", 7)  # several batches from a small book
    with AutotaskStandin(today=TODAY, latency_ms=2) as standin:
        rows, services = at_book(standin, 30)
        cfg = at_config(tmp_path, standin, monkeypatch)
        client = at_client(cfg, standin)
        run = Run(cfg, client, rows)
        log = standin.requests
        posts = {r.body["contractServiceID"]: i for i, r in enumerate(log)
                 if r.endpoint == "ContractServiceAdjustments"}
        assert len(posts) == len([r for r in log if r.endpoint == "ContractServiceAdjustments"])  # one post each
        assert run.report.count(UPDATED) == len(posts) > 3 * 7
        reads = [(i, set(f["value"])) for i, r in enumerate(log) if r.endpoint == "ContractServiceUnits"
                 for f in r.body["filter"] if f.get("field") == "contractServiceID"]
        batches: List[Set[int]] = []
        for _, csids in reads:  # a batch's first read names all of its services; its verify, those it posted
            if not any(csids <= batch for batch in batches):
                batches.append(csids)
        assert len(batches) == -(-len(posts) // 7) and set().union(*batches) >= set(posts)
        batches.sort(key=lambda batch: min(posts[c] for c in batch if c in posts))  # reads ahead may land early
        for number, batch in enumerate(batches):
            posted = [posts[c] for c in batch if c in posts]
            first_read = min(i for i, csids in reads if csids == batch)
            verify = max(i for i, csids in reads if csids <= batch)
            assert first_read < min(posted) and max(posted) < verify
            later = [posts[c] for b in batches[number + 1:] for c in b if c in posts]
            assert not later or max(posted) < min(later)
        assert max(standin.max_inflight.values()) <= PER_ENDPOINT == 2
        for row in rows:
            assert standin.units(services[f"{row.customer}/{row.sku}"]) == row.seats


def _book(standin: AutotaskStandin, customers: int
          ) -> Tuple[List[UsageRow], Dict[str, int], Dict[str, int], int]:
    """at_book, with each service's units before the run and how many rows change them."""
    rows, services = at_book(standin, customers)
    initial = {key: standin.units(csid) for key, csid in services.items()}
    return rows, services, initial, sum(row.seats != initial[f"{row.customer}/{row.sku}"] for row in rows)


def _truthful(run: Refresh, rows: List[UsageRow], services: Dict[str, int], standin: AutotaskStandin,
              initial: Dict[str, int]) -> None:
    """Every item says what happened to its service: updated ones hold the count, failed ones are as they were,
    unknown ones (posted, not read back) hold one or the other."""
    for row in rows:
        key = f"{row.customer}/{row.sku}"
        item = run.by(row.customer, row.sku)
        if item.outcome in (UPDATED, UNCHANGED):
            assert standin.units(services[key]) == row.seats, (key, item)
        elif item.outcome == UNKNOWN:
            assert standin.units(services[key]) in (row.seats, initial[key]), (key, item)
        else:
            assert item.outcome == FAILED and standin.units(services[key]) == initial[key], (key, item)


def test_autotask_credentials_refused_to_a_verify_read_stop_the_batch_posting_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two batches: the second posts while the first verifies. The first's verify read is refused (401): the
    # run stops, and the second batch's posts not yet on the wire are not sent (at most those holding an
    # endpoint slot in the instant go). The first batch was taken by Autotask but could not be read back:
    # unknown, never assumed. A re-run finishes the job counting nothing twice.
    with AutotaskStandin(today=TODAY, latency_ms=20) as standin:
        rows, services, initial, changed = _book(standin, 30)
        half = -(-changed // 2)
        monkeypatch.setattr(autotask, "IN_BATCH", half)
        cfg = at_config(tmp_path, standin, monkeypatch)
        client = at_client(cfg, standin)
        announced: List[int] = []

        def sending(batch: Any) -> None:
            announced.append(len(batch))
            if len(announced) == 2:  # the first batch has posted; the next units read is its verify
                standin.fail(401, endpoint="ContractServiceUnits")

        standin.clear_log()
        first = Run(cfg, client, rows, sending=sending)
        assert announced == [half, changed - half]
        log = standin.requests
        refused = next(i for i, r in enumerate(log) if r.status == 401)
        assert log[refused].endpoint == "ContractServiceUnits"
        second_batch = [i for i, r in enumerate(log) if r.endpoint == "ContractServiceAdjustments"][half:]
        assert len([i for i in second_batch if i > refused]) <= 2 * PER_ENDPOINT  # sent after the refusal
        assert len(second_batch) < changed - half  # the rest were never sent
        unknown = [i for i in first.report.items if i.outcome == UNKNOWN]
        assert len(unknown) == half and all("posted, but the re-read failed" in i.message for i in unknown)
        assert all(standin.units(services[f"{i.customer}/{i.sku}"]) == i.new for i in unknown)  # they landed
        not_written = [i for i in first.report.items if i.outcome == FAILED]
        assert len(not_written) == changed - half - len(second_batch)
        assert all(i.message == "not written: the run stopped before it was sent" and i.transient
                   and i.hint.startswith("a later firing") for i in not_written)
        assert first.report.count(UPDATED) == len(second_batch)
        assert len(standin.adjustments) == half + len(second_batch)
        _truthful(first, rows, services, standin, initial)

        second = Run(cfg, at_client(cfg, standin), rows)
        assert second.report.count(FAILED) == 0 and second.report.count(UPDATED) == len(not_written)
        _truthful(second, rows, services, standin, initial)
        assert len(standin.adjustments) == changed  # nothing posted twice


def test_autotask_a_refused_post_stops_its_batch_posts_not_yet_sent_also_those_waiting_for_a_slot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Eight workers, two posts in flight at most (below Autotask's per-endpoint limit of 3), the rest waiting
    # for a slot. The first post to arrive is refused (401): the one beside it lands, and the waiting ones are
    # not sent once the refusal is known (one taking a slot in the instant before may still go: at most the
    # six waiting). Without the check at the slot, 39 of the 40 went out.
    with AutotaskStandin(today=TODAY, latency_ms=30) as standin:
        rows, services, initial, changed = _book(standin, 30)
        cfg = at_config(tmp_path, standin, monkeypatch, concurrency=8)
        standin.fail(401, endpoint="ContractServiceAdjustments")
        run = Run(cfg, at_client(cfg, standin), rows)
        sent = [r for r in standin.requests if r.endpoint == "ContractServiceAdjustments"]
        assert PER_ENDPOINT <= len(sent) <= 8 < changed
        assert run.report.count(UPDATED) == len(standin.adjustments) == len(sent) - 1
        failed = [i for i in run.report.items if i.outcome == FAILED]
        assert [i.message.startswith("update failed:") and "credentials refused" in i.message
                for i in failed].count(True) == 1
        assert len(failed) == changed - len(standin.adjustments)
        assert all(i.message.startswith(("update failed:", "not written:")) for i in failed)
        _truthful(run, rows, services, standin, initial)


def test_autotask_a_post_whose_answer_is_lost_is_verified_counted_once_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One adjustment lands but its answer comes after the client's 1 s timeout. That stops nothing: the
    # verify read finds it landed, every item is updated, and no adjustment is posted twice.
    with AutotaskStandin(today=TODAY) as standin:
        rows, services, initial, changed = _book(standin, 12)
        cfg = at_config(tmp_path, standin, monkeypatch, timeout=1, concurrency=1)
        standin.delay(2.5, late=True, endpoint="ContractServiceAdjustments")
        run = Run(cfg, at_client(cfg, standin), rows)
        assert run.report.count(FAILED) == 0 and run.report.count(UPDATED) == changed
        assert len(standin.adjustments) == changed == len({a["contractServiceID"] for a in standin.adjustments})
        _truthful(run, rows, services, standin, initial)


def test_autotask_maps_by_name_and_reports_a_missing_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with AutotaskStandin(today=TODAY) as standin:
        company = standin.add_company("Initech LLC", "IN-1")
        contract = standin.add_contract(company)
        csid = standin.add_service(contract, 501, 10)
        cfg = at_config(tmp_path, standin, monkeypatch)
        run = Run(cfg, at_client(cfg, standin), [UsageRow("initech llc", "LastPass", 12),
                                                 UsageRow("initech llc", "LastPass+MFA", 12)])
        assert run.by("initech llc").outcome == UPDATED and standin.units(csid) == 12
        missing = run.by("initech llc", "LastPass+MFA")
        assert missing.message == f"product '502' (SKU LastPass+MFA) is not on contract 'Managed Services' (#{contract})"
        assert missing.hint.startswith("add '502' to the contract in Autotask")


def test_autotask_writes_what_fits_the_hourly_allowance_and_records_the_rest_as_not_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with AutotaskStandin(today=TODAY) as standin:
        rows, _ = at_book(standin, 6)
        cfg = at_config(tmp_path, standin, monkeypatch)
        # [psa] budget_share 0.5 of 10,000 = 5,000, of which 4,984 are used: this run may send 16 requests,
        # 8 of them the reads before the writes (zone, allowance, companies by number and name, contracts,
        # the three line reads). Each write batch costs up to 5 reads besides its posts: 3 writes fit.
        standin.used_this_hour = 4_984
        client = at_client(cfg, standin)
        run = Run(cfg, client, rows)
        refused = [i for i in run.report.items if i.outcome == FAILED]
        assert refused and all(re.fullmatch(
            r"not written: Autotask's hourly allowance for this run \(\[psa\] budget_share = 0\.5 of the "
            r"database's, all integrations together\) is used up; a firing after \d\d:\d\d continues",
            i.message) and i.transient for i in refused)
        assert run.report.count(UPDATED) == len(standin.adjustments) == 3
        assert standin.total <= 16


def test_autotask_hour_nearly_used_up_by_other_integrations_writes_nothing_it_cannot_afford(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # budget_share 0.5: 5,000 of the hour's 10,000 are this database's share for psabill; others used 4,988.
    # The reads fit, no write batch does.
    with AutotaskStandin(today=TODAY, threshold=10_000, used_this_hour=4_988) as standin:
        rows, _ = at_book(standin, 6)
        cfg = at_config(tmp_path, standin, monkeypatch)
        run = Run(cfg, at_client(cfg, standin), rows)
        assert standin.adjustments == []
        assert run.report.count(FAILED) == len(rows) - run.report.count(UNCHANGED)
        assert standin.counts["ThresholdInformation"] == 1


def test_autotask_products_by_service_name_and_an_ambiguous_name_fails_its_items(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with AutotaskStandin(today=TODAY) as standin:
        standin.add_catalog_service("LastPass Business", 501)
        standin.add_catalog_service("MFA", 502)
        standin.add_catalog_service("MFA", 503)
        contract = standin.add_contract(standin.add_company("Initech LLC", "IN-1"))
        csid = standin.add_service(contract, 501, 10)
        standin.add_service(contract, 502, 10)
        monkeypatch.setenv("PSABILL_TEST_AT_SECRET", standin.secret)
        cfg = write_config(tmp_path, {"kind": "autotask", "username": standin.username,
                                      "integration_code": standin.integration_code,
                                      "secret_env": "PSABILL_TEST_AT_SECRET"},
                           {"LastPass": "LastPass Business", "LastPass+MFA": "MFA"})
        run = Run(cfg, at_client(cfg, standin), [UsageRow("IN-1", "LastPass", 12), UsageRow("IN-1", "LastPass+MFA", 12)])
        assert run.by("IN-1").outcome == UPDATED and standin.units(csid) == 12
        ambiguous = run.by("IN-1", "LastPass+MFA")
        assert ambiguous.outcome == FAILED
        assert ambiguous.message == "SKU 'LastPass+MFA': 2 Autotask services are named 'MFA' (#502, #503)"
        assert standin.counts["Services"] == 1  # resolved once per run


def test_autotask_unreachable_zone_lookup_aborts_naming_the_url(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    standin = AutotaskStandin(today=TODAY)
    url = standin.url
    cfg = at_config(tmp_path, standin, monkeypatch)
    standin.stop()
    with pytest.raises(AbortError) as info:
        Run(cfg, at_client(cfg, standin), [UsageRow("A0001", "LastPass", 1)])
    assert info.value.message.startswith("Autotask is unreachable; nothing was written: Autotask zone lookup for ")
    assert f"GET {url}/ATServicesRest/v1.0/ZoneInformation" in info.value.message
    assert standin.secret not in info.value.message


# -- credentials and the factory -------------------------------------------------


class TestSecrets:
    def secret(self, tmp_path: Path, psa: Dict[str, Any]) -> str:
        return resolve(settings_for(tmp_path / "config.toml", {"psa": {"kind": "autotask", **psa}}).psa.secret)

    def test_literal_env_and_file_forms(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert self.secret(tmp_path, {"secret": "s3cret"}) == "s3cret"
        monkeypatch.setenv("AT_SECRET", "from-env")
        assert self.secret(tmp_path, {"secret_env": "AT_SECRET"}) == "from-env"
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "at").write_text("from-file\r\n")
        (tmp_path / "keys" / "at").chmod(0o600)  # a secret file readable by group or others is refused
        assert self.secret(tmp_path, {"secret_file": "keys/at"}) == "from-file"
        assert not settings_for(tmp_path / "config.toml", {"psa": {"kind": "autotask"}}).psa.secret.configured

    @pytest.mark.parametrize("psa, expected", [
        ({"secret": "hunter22", "secret_env": "X"}, r"sets secret and secret_env: keep only one"),
        ({"secret_env": "PSABILL_NO_SUCH_VAR"}, r"secret_env names \$PSABILL_NO_SUCH_VAR, which is not set"),
        ({}, r"needs secret_env, secret_file or secret"),
    ])
    def test_errors_name_the_key_never_the_value(self, tmp_path: Path, psa: Dict[str, Any], expected: str) -> None:
        with pytest.raises(ConfigError, match=expected) as info:
            self.secret(tmp_path, psa)
        assert "hunter22" not in info.value.message

    def test_a_missing_file_aborts_for_a_later_firing_naming_the_key(self, tmp_path: Path) -> None:
        # A file that cannot be read right now (being replaced) is no config mistake: the run stops before
        # any request and a later firing within catch-up tries again.
        with pytest.raises(AbortError, match=r"secret_file: .*missing.key not found; nothing was sent") as info:
            self.secret(tmp_path, {"secret_file": "missing.key"})
        assert "catch-up" in info.value.message

    def test_an_empty_file_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "empty.key").write_text("\n")
        (tmp_path / "empty.key").chmod(0o600)
        with pytest.raises(ConfigError, match=r"secret_file: .*empty.key is empty$"):
            self.secret(tmp_path, {"secret_file": "empty.key"})


def test_the_factory_needs_a_kind_and_a_credential(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[psa\] kind is not set"):
        open_client(settings_for(tmp_path / "c.toml", {"psa": {"url": "https://x"}}).psa)
    with pytest.raises(ConfigError, match=r"needs private_key_env, private_key_file or private_key"):
        open_client(settings_for(tmp_path / "c.toml", {"psa": {"kind": "connectwise", "url": "https://x",
                                                                "company": "c", "public_key": "p",
                                                                "client_id": "i"}}).psa)
    with pytest.raises(ConfigError, match=r"refusing plain-HTTP URL http://psa.example.com"):
        open_client(settings_for(tmp_path / "c.toml", {"psa": {"kind": "autotask", "url": "http://psa.example.com",
                                                                "username": "u", "integration_code": "c",
                                                                "secret": "s"}}).psa)
