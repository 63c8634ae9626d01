"""The interface every PSA client offers the refresh engine.

The engine never sees HTTP. A client lists companies, the active billing
agreements (ConnectWise agreements / Autotask contracts) of given companies,
and the billable lines on one agreement (ConnectWise additions / Autotask
contract services with their current units); and it sets one line's quantity.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

#: A PSA quantity: an int when whole, a Decimal otherwise (ConnectWise quantities are decimals).
Quantity = Union[int, Decimal]

#: Maps a function over items like ``map``; the engine passes its thread pool's ``map``.
Run = Callable[[Callable[[Any], Any], Sequence[Any]], Iterator[Any]]


class PsaError(Exception):
    """A request failed after retries. The message never contains a credential."""


class PsaAuthError(PsaError):
    """The PSA refused our credentials (401/403)."""


class PsaUnreachable(PsaError):
    """The PSA could not be reached at all (connection refused, DNS, TLS, timeouts)."""


class PsaNoAnswer(PsaUnreachable):
    """A write was sent but its answer never came (timed out, connection dropped): it may have been applied."""


class Halted(PsaError):
    """A write not sent, because the run was stopping (the PSA went away or refused the credentials)."""


@dataclass(frozen=True)
class Terms:
    """What a PSA calls things, for messages: ("ConnectWise", "agreement", "addition")."""

    psa: str
    agreement: str
    line: str


CONNECTWISE_TERMS = Terms("ConnectWise", "agreement", "addition")
AUTOTASK_TERMS = Terms("Autotask", "contract", "contract service")


@dataclass(frozen=True)
class Company:
    id: str
    identifier: str  # ConnectWise company identifier / Autotask account number or id
    name: str


@dataclass(frozen=True)
class Agreement:
    id: str
    company_id: str
    name: str


@dataclass(frozen=True)
class Line:
    """One billable product on an agreement, with its current quantity."""

    id: str  # addition id / contract service id
    agreement_id: str
    product: str  # ConnectWise product identifier / Autotask service id
    quantity: Quantity  # exact: 2.5 is not 2


@dataclass(frozen=True)
class Written:
    """What a write found and did, when there is more to say than the quantity before."""

    before: int
    note: str = ""  # e.g. "December is posted; 12 seats take effect 2027-01-01"


class PsaClient(Protocol):
    kind: str  # "connectwise" | "autotask"
    terms: Terms
    # Optional capabilities, declared rather than probed:
    bulk_lines: bool  # offers lines_for(), reading many agreements' lines in few requests
    budgeted: bool  # requests come out of a shared allowance: check() learns it, ensure_budget() guards it
    bulk_writes: bool  # writes in batches of write_batch: read_ahead(), post_batch(), verify_batch(), write_capacity()
    write_batch: int

    @property
    def request_count(self) -> int: ...

    def check(self) -> str:
        """Verify reachability and credentials; return a one-line description.

        Raises PsaAuthError or PsaUnreachable.
        """

    def companies(self, identifiers: Sequence[str] = (), names: Sequence[str] = (), run: Run = map) -> List[Company]:
        """Companies matching any identifier or name (case-insensitive names); all if both empty.

        Independent queries go through ``run`` (the engine passes its thread pool's ``map``).
        """

    def agreements(self, company_ids: Sequence[str], run: Run = map) -> List[Agreement]:
        """Active, non-cancelled agreements/contracts of these companies; independent queries through ``run``."""

    def lines(self, agreement: Agreement) -> List[Line]:
        """The billable lines on one agreement, with current quantities."""

    def lines_for(self, agreements: Sequence[Agreement], run: Run = map) -> Dict[str, List[Line]]:
        """Lines of many agreements at once, independent reads through ``run`` (only when ``bulk_lines``)."""

    def ensure_budget(self, planned: int) -> None:
        """Raise PsaError if ``planned`` more requests would overrun the allowance (only when ``budgeted``)."""

    def read_ahead(self, targets: Sequence[Tuple[Line, int]], run: Run = map) -> Any:
        """Start a later batch's bulk read early, through ``run``, for post_batch (``bulk_writes``)."""

    def post_batch(self, targets: Sequence[Tuple[Line, int]], run: Run = map, ahead: Any = None,
                   halt: Callable[[], bool] = lambda: False) -> Any:
        """Send one batch's writes (only when ``bulk_writes``); a write finding ``halt()`` true is not sent.

        What it returns goes to verify_batch; its ``problem`` is the error that stopped the posts (the PSA
        gone, the credentials refused), or None.
        """

    def verify_batch(self, posted: Any, run: Run = map,
                     ) -> Tuple[Dict[str, Union[Written, Exception]], Optional[PsaError]]:
        """Re-read a posted batch: line id -> Written or that line's exception, and the re-read's error if any."""

    def write_capacity(self, writes: int) -> Tuple[int, str]:
        """How many of ``writes`` the allowance still covers, and the message for the rest (``bulk_writes``)."""

    def resolve_products(self, values: Sequence[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
        """[products] values -> the PSA's product ids, and values -> why one cannot be used."""

    def missing_note(self, agreement_id: str, product: str) -> Optional[str]:
        """Why ``product`` has no line on the agreement, when the PSA knows (e.g. a service bundle)."""

    def set_quantity(self, line: Line, quantity: int) -> "Quantity | Written":
        """Make the line's quantity ``quantity``; return the quantity found just before (or a Written).

        ConnectWise writes the absolute value. Autotask re-reads the current units
        and posts the delta, so calling this twice never double-counts.
        """

    def close(self) -> None: ...
