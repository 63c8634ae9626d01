"""The one interface every PSA client offers the run: three reads and one write.

The engine never sees HTTP, batching or a PSA's rate limits. It asks a client
for companies, for their billing agreements (ConnectWise agreements, Autotask
contracts) and for the billable lines on those agreements; then it hands the
client every planned change at once, and :meth:`PsaClient.write` yields each
one's outcome as it settles. How the writes are batched, read ahead, verified
or budgeted against an allowance is the client's own business.

Two promises every client keeps:

* **Nothing unplanned is written**, and nothing is written before
  ``sending(batch)`` has returned for the batch it is in: that is where the
  run records its intent. ``halt()`` true, or the PSA found gone, stops the
  writes not yet sent; each then ends "not written".
* **An unknown is never a number.** A quantity the PSA answers as null,
  missing or not a number makes that line fail; a write whose outcome the
  client cannot read back is :data:`UNKNOWN`, never assumed.
"""

import abc
from datetime import date, tzinfo
from decimal import Decimal, InvalidOperation
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from psabill import psa
from psabill.errors import ConfigError
from psabill.net.errors import RemoteError

if TYPE_CHECKING:
    from psabill.config.schema import PsaSettings

#: A PSA quantity: an int when whole, a Decimal otherwise (ConnectWise quantities are decimals).
Quantity = Union[int, Decimal]


class Terms(NamedTuple):
    """What a PSA calls things, for messages: ("ConnectWise", "agreement", "addition")."""

    psa: str
    agreement: str
    line: str


class Company(NamedTuple):
    id: str
    identifier: str  # ConnectWise company identifier / Autotask account number or id
    name: str


class Agreement(NamedTuple):
    id: str
    company_id: str
    name: str
    note: str = ""  # said on every item of it, e.g. "contract 12 is inactive but still bills"


class Line(NamedTuple):
    """One billable product on an agreement, with its current quantity (None: the PSA did not say)."""

    id: str  # addition id / contract service id
    agreement_id: str
    product: str  # the [products] value it bills (ConnectWise product identifier / Autotask service)
    quantity: Optional[Quantity]  # exact: 2.5 is not 2; None is never taken as 0
    note: str = ""  # what the client did or will do, e.g. "dated to the billing period's start 2026-03-01"
    problem: str = ""  # why this line cannot be written (its quantity unknown, a period closed)
    product_id: str = ""  # the PSA's own id of the product, when it differs from ``product`` (a service name)
    # The billing period holds other quantities besides ``quantity`` (Autotask: a units row from a change made
    # mid-period): the line is written even when ``quantity`` already equals the seats, so the whole period bills them.
    uneven: bool = False
    # Why a change now lands on an invoice for a period that has ended (ConnectWise: the next invoice is for an
    # earlier billing cycle). The guard's ``hold_closed_period`` holds such a change in unattended runs.
    closed: str = ""


class Lines(NamedTuple):
    """What :meth:`PsaClient.lines` found."""

    by_agreement: Dict[str, List[Line]]
    problems: Dict[str, str] = {}  # [products] value -> why it cannot be used ("no Autotask service is named ...")
    explain: Dict[Tuple[str, str], str] = {}  # (agreement id, product) -> why it has no line there (a bundle)
    unreadable: Dict[str, str] = {}  # agreement id -> why its lines could not be read
    hints: Dict[Tuple[str, str], str] = {}  # (agreement id, product) -> the fix for its ``explain``, if not the default


class Target(NamedTuple):
    """One planned change: make ``line`` hold ``new``; the plan saw ``old``."""

    key: int  # the plan's sequence number of the item
    line: Line
    old: Quantity
    new: int


#: Outcomes :meth:`PsaClient.write` reports, as item outcomes (psabill.outcomes).
UPDATED = "updated"
UNCHANGED = "unchanged"
FAILED = "failed"
HELD = "held"
UNKNOWN = "unknown"


class Written(NamedTuple):
    """How one target ended."""

    key: int
    outcome: str  # UPDATED, UNCHANGED, FAILED, HELD or UNKNOWN
    before: Optional[Quantity] = None  # what the PSA held right before the write, when known
    message: str = ""
    transient: bool = False  # a failure a later attempt may fix: the run retries it within catch-up
    hint: str = ""


class Stop(Exception):
    """Raised by ``sending`` to stop the writes: nothing of that batch is sent."""


Sending = Callable[[Sequence[Target]], None]


class PsaClient(abc.ABC):
    """A PSA, as the run sees it."""

    kind: ClassVar[str]
    terms: ClassVar[Terms]

    @property
    @abc.abstractmethod
    def request_count(self) -> int:
        """Every HTTP request sent so far, retries included."""

    @abc.abstractmethod
    def check(self) -> str:
        """Reach the PSA with the credentials; a one-line description. Raises RemoteError."""

    @abc.abstractmethod
    def companies(self, wanted: Sequence[str]) -> List[Company]:
        """Companies whose identifier or name (ignoring case) is one of ``wanted``."""

    @abc.abstractmethod
    def agreements(self, company_ids: Sequence[str]) -> List[Agreement]:
        """The agreements of these companies that bill now (an inactive one that still bills says so)."""

    @abc.abstractmethod
    def lines(self, agreements: Sequence[Agreement], products: Sequence[str]) -> Lines:
        """The lines on these agreements that bill one of ``products`` ([products] values), with quantities."""

    @abc.abstractmethod
    def write(self, targets: Sequence[Target], *, halt: Callable[[], bool], sending: Sending) -> Iterator[Written]:
        """Make each target's line hold its ``new``; yield every target's :class:`Written` as it settles.

        ``sending(batch)`` is called, and returns, before any target of
        ``batch`` goes on the wire; it may raise :class:`Stop`. A target whose
        line no longer holds its ``old`` when the client reads it before
        writing fails with "changed in the PSA since the plan".
        """

    def close(self) -> None:
        """Release connections and threads."""


def changed_since_plan(target: Target, now: Optional[Quantity], terms: Terms) -> Written:
    """The outcome of a target whose line moved between the plan and the write."""
    shown = "no quantity" if now is None else str(now)
    return Written(target.key, FAILED, now,
                   f"changed in {terms.psa} since the plan: it held {target.old} then and {shown} now; not written",
                   hint="run again: the next plan starts from what the PSA holds now")


def not_written(target: Target, why: str, *, transient: bool = True) -> Written:
    return Written(target.key, FAILED, None, f"not written: {why}", transient=transient,
                   hint="a later firing within catch-up writes it; nothing is double-counted" if transient else "")


def open_client(settings: "PsaSettings", *, billing_date: Optional[date] = None, zone: Optional[tzinfo] = None,
                **options: Any) -> PsaClient:
    """The client of ``settings.kind`` (from the registry); ``options`` pass through (tests: backoff).

    ``billing_date`` is the date on the account's calendar that lines must be
    billing on (None: the client's own idea of today); ``zone`` is the
    account's zone. A client resolves its own credential. A problem found
    before any request (a bad CA file, a plain-HTTP URL) is a config error.
    """
    if not settings.kind:
        raise ConfigError("[psa] kind is not set: " + " or ".join(psa.kinds()))
    try:
        cls = psa.client_class(settings.kind)
    except KeyError:
        raise ConfigError(f"[psa] kind {settings.kind!r} is not one of {', '.join(psa.kinds())}") from None
    try:
        client: PsaClient = cls(settings, billing_date=billing_date, zone=zone, **options)
    except RemoteError as exc:  # a message that already names its [psa] key is not prefixed twice
        raise ConfigError(str(exc) if str(exc).startswith("[psa]") else f"[psa] {exc}") from None
    return client


def numeric_id(value: Any, what: str) -> int:
    """PSA ids are whole numbers; one that is not (``A-17``, ``17.0``) is a RemoteError naming it."""
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise RemoteError(f"{what} {value!r} is not a whole-number id")
    return int(text)


def quantity(value: Any, what: str = "quantity") -> Quantity:
    """A PSA quantity, exactly: an int when whole, else a Decimal (2.5 stays 2.5, never rounds to 2).

    None, a bool or anything but a finite number raises RemoteError: an unknown is never a number.
    JSON numbers arrive as floats; ``str()`` of a float is its shortest exact spelling, so 2.5 becomes
    Decimal("2.5"), not 2.5000000000000000001.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise RemoteError(f"{what} is {_shown(value)}, not a number")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise RemoteError(f"{what} is {_shown(value)}, not a number") from None
    if not number.is_finite():
        raise RemoteError(f"{what} is {_shown(value)}, not a number")
    return int(number) if number == number.to_integral_value() else number.normalize()


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
