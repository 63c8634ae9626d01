"""Every config key, declared once: its check, default, type, meaning, example and starter.

The typed settings (:mod:`psabill.config.settings`), ``psabill config
reference``, the README's reference table and ``psabill config init`` are all
made from the sections below (see :mod:`psabill.config.keys` for how a
declaration reads). :data:`SCHEMA` lists them in the order the reference and
the starter show them; a test can build its own :class:`Schema` with a section
swapped for one that declares an extra key.
"""

from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Optional, Tuple, Type

from psabill import psa as psa_kinds
from psabill import sources as source_kinds
from psabill.config.keys import (BOOL, STRING, Context, SecretRef, Starter, all_of, argv, as_float, as_path,
                                 as_seconds, as_tuple, aware, check_date, choice, duration_text, int_range, key,
                                 number_range, of_type, one_of, or_none, parse_duration, section, seconds, secret,
                                 string_list, sub, url)

VERSION = 1
DEFAULT_SENDMAIL = ("/usr/sbin/sendmail", "-t", "-oi")
MIN_CATCH_UP = timedelta(hours=3)  # an occurrence can run up to 3 hours late (schedule.cronplan)


def _zone(value: Any) -> Optional[str]:
    from psabill.clock import fixed_offset_problem, resolve_zone_name  # zoneinfo's tables: only a zone key needs them

    if not isinstance(value, str):
        return "expected an IANA zone name"
    name, problem = resolve_zone_name(value)
    return problem or fixed_offset_problem(name)


def _zone_name(value: Any, ctx: Context) -> str:
    from psabill.clock import resolve_zone_name  # as in _zone

    return resolve_zone_name(value)[0]


def _weekday(value: Any) -> Optional[str]:
    from psabill.schedule.rules import ScheduleError, parse_weekday  # only a weekly schedule needs it

    if not isinstance(value, str):
        return "expected a weekday name such as \"tue\""
    try:
        parse_weekday(value)
    except ScheduleError as exc:
        return str(exc)
    return None


def _day(value: Any) -> Optional[str]:
    if value == "last" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 31):
        return None
    return "expected 1-31 or \"last\""


def _catch_up(value: Any) -> Optional[str]:
    problem = duration_text(value)
    if problem is None and parse_duration(value) < MIN_CATCH_UP:
        problem = "must be at least 3h (an occurrence can run up to 3 hours late)"
    return problem


def _as_duration(value: Any, ctx: Context) -> timedelta:
    return parse_duration(value)


def _addresses(value: Any) -> Optional[str]:
    return string_list(value)


def _share(value: Any) -> Optional[str]:
    return number_range(0, 1, "a share")(value)


def _factor(value: Any) -> Optional[str]:
    return number_range(1, 1_000_000, "a factor")(value)


def _http_url(value: Any) -> Optional[str]:
    return url("https", "http")(value)


def _history_url(value: Any) -> Optional[str]:
    # {run_id} is replaced before use; the URL must be http(s) so a javascript: link never reaches the email.
    return url("https", "http")(value.replace("{run_id}", "1") if isinstance(value, str) else value)


def _state_url(value: Any) -> Optional[str]:
    if value == "":
        return None
    return url("postgresql", "postgres")(value)


def _product(value: Any) -> Optional[str]:
    if isinstance(value, int) and not isinstance(value, bool):
        return None  # an Autotask service id
    return STRING(value)


@section("")
class TopSettings(NamedTuple):
    version: int = key(int_range(1, VERSION), VERSION, type="integer", meaning="Config format version; written by psabill.",
                       example=str(VERSION), starter=Starter(str(VERSION)))



@section("account")
class AccountSettings(NamedTuple):
    name: str = key(STRING, "", type="string", meaning="Account name shown in the report email and on the site.",
                    example='"Example MSP"', default_doc='""', starter=Starter('"Example MSP"'))
    timezone: Optional[str] = key(_zone, None, type="IANA zone", meaning="Zone the schedule's hour is in.",
                                  example='"America/New_York"', default_doc="the host's zone", decode=_zone_name,
                                  starter=Starter(active=False))
    id: Optional[str] = key(all_of(STRING, of_type(str)), None, type="string",
                            meaning="This config's identity in a shared ledger: hosts that run one config share it; "
                                    "two configs never do.",
                            example='"msp-connectwise"',
                            default_doc="the PSA kind, URL and company, and the config path")


@section("schedule")
class ScheduleSettings(NamedTuple):
    enabled: bool = key(BOOL, True, type="bool", meaning="Whether the scheduler runs the schedule "
                        "(`schedule enable/disable`).", example="true")
    mode: Optional[str] = key(one_of("monthly", "weekly", "daily"), None, type='"monthly", "weekly" or "daily"',
                              meaning="How often the update runs.", example='"weekly"', default_doc="no schedule")
    day: Any = key(_day, None, type='1-31 or "last"', meaning="Day of the month (monthly); past a month's end runs "
                   "on its last day.", example='"last"', default_doc="-")
    weekday: Optional[str] = key(_weekday, None, type="weekday name", meaning="Day of the week (weekly): mon..sun.",
                                 example='"tue"', default_doc="-")
    hour: int = key(int_range(0, 23), 0, type="integer 0-23", meaning="Full hour, in the account zone.", example="9")
    start: Optional[date] = key(all_of(of_type(date), check_date), None, type="date",
                                meaning="No run before this date (account zone).", example="2026-01-01",
                                default_doc="-")
    saved_at: Any = key(all_of(aware, check_date), None, type="date-time with offset",
                        meaning="When the schedule was saved (written by psabill; nothing earlier runs).",
                        example="2026-01-01T09:00:00Z", default_doc="-")
    enabled_at: Any = key(all_of(aware, check_date), None, type="date-time with offset",
                          meaning="When the schedule was last enabled (written by psabill; nothing that fell due "
                                  "while it was disabled runs).", example="2026-01-05T09:00:00Z", default_doc="-")
    catch_up: timedelta = key(_catch_up, timedelta(hours=24), type="duration",
                              meaning="How late a missed occurrence may still run, and how long a failed one is "
                                      "retried hourly (at least 3h).",
                              example='"24h"', default_doc='"24h"', decode=_as_duration)


@section("notify.smtp")
class SmtpSettings(NamedTuple):
    host: str = key(STRING, "localhost", type="host name", meaning="SMTP server.", example='"smtp.msp.example"',
                    default_doc='"localhost"')
    port: Optional[int] = key(int_range(1, 65535), None, type="integer 1-65535", meaning="SMTP port.", example="587",
                              default_doc="465 (ssl), 587 (starttls), 25 (none)")
    security: str = key(one_of("starttls", "ssl", "none"), "starttls", type='"starttls", "ssl" or "none"',
                        meaning="TLS mode.", example='"starttls"', default_doc='"starttls"')
    username: Optional[str] = key(STRING, None, type="string", meaning="SMTP login.", example='"psabill"',
                                  default_doc="no login")
    password: SecretRef = secret(what="the SMTP password", env="PSABILL_SMTP_PASSWORD", file="smtp-password")
    timeout: float = key(seconds(0.1, 3600), 30.0, type="seconds",
                         meaning="Bound on the whole SMTP conversation.", example="30", default_doc="30",
                         decode=as_float)
    ca_file: Optional[Path] = key(STRING, None, type="path", meaning="Extra CA bundle for the SMTP server.",
                                  example='"ca.pem"', default_doc="system CAs", decode=as_path)


@section("notify.sendmail")
class SendmailSettings(NamedTuple):
    command: Tuple[str, ...] = key(argv, DEFAULT_SENDMAIL, type="argv list",
                                   meaning='Command for transport = "sendmail"; a relative program is found next '
                                           "to the config.",
                                   example='["/usr/sbin/sendmail", "-t", "-oi"]',
                                   default_doc='["/usr/sbin/sendmail", "-t", "-oi"]', decode=as_tuple)


@section("notify.file")
class FileSettings(NamedTuple):
    dir: Optional[Path] = key(STRING, None, type="path", meaning='Directory that gets .eml files (transport = "file").',
                              example='"outbox"', default_doc="outbox in the state dir", decode=as_path)


@section("notify")
class NotifySettings(NamedTuple):
    emails: Tuple[str, ...] = key(_addresses, (), type="list of addresses",
                                  meaning="Who gets the results email (`Name <address>` is fine).",
                                  example='["billing@msp.example"]', default_doc="[]", decode=as_tuple,
                                  starter=Starter('["billing@msp.example"]', active=False))
    on_manual: bool = key(BOOL, False, type="bool", meaning="Also email the results of runs started by hand.",
                          example="true", starter=Starter("false"))
    transport: Optional[str] = key(one_of("smtp", "sendmail", "file"), None, type='"smtp", "sendmail" or "file"',
                                   meaning="How the email is delivered.", example='"smtp"',
                                   default_doc='"smtp" if [notify.smtp] is set, else "sendmail"')
    sender: Optional[str] = key(STRING, None, type="address", meaning="Sender address of the email.",
                                example='"psabill@msp.example"', toml="from",
                                default_doc="psabill@<this host's full domain name>")
    template_dir: Optional[Path] = key(STRING, None, type="path",
                                       meaning="Directory with subject.txt, body.txt and body.html overrides.",
                                       example='"templates"', default_doc="built-in templates", decode=as_path)
    history_url: Optional[str] = key(_history_url, None, type="URL",
                                     meaning="Link to a run in the email; `{run_id}` is replaced. Wins over "
                                             "[history] site_url.",
                                     example='"https://billing.msp.example/runs/{run_id}"', default_doc="-")
    ping_url: Optional[str] = key(_http_url, None, type="URL",
                                  meaning="Dead-man's-switch check (healthchecks.io, cronitor): a real run requests "
                                          "<url>/start, then <url> on success or <url>/fail on failure, abort or hold.",
                                  example='"https://hc-ping.com/your-uuid"', default_doc="-", decode=or_none,
                                  starter=Starter(active=False))
    smtp: SmtpSettings = sub(SmtpSettings)
    sendmail: SendmailSettings = sub(SendmailSettings)
    file: FileSettings = sub(FileSettings)


@section("source")
class SourceSettings(NamedTuple):
    kind: Optional[str] = key(choice(source_kinds.kinds), None, type=" or ".join(f'"{k}"' for k in source_kinds.kinds()),
                              meaning="Where seat counts come from (see Usage sources).", example='"lastpass"',
                              default_doc="-", starter=Starter('"{kind}"'))
    path: Optional[Path] = key(STRING, None, type="path", meaning="The CSV or JSON file (kind csv/json).",
                               example='"usage.csv"', default_doc="-", decode=as_path,
                               starter=Starter('"usage.{kind}"', kinds=("csv", "json")))
    command: Tuple[str, ...] = key(argv, (), type="argv list",
                                   meaning="Command printing CSV or JSON (kind command); run without a shell in the "
                                           "config's directory.", example='["./export-seats", "--all"]',
                                   default_doc="-", decode=as_tuple, starter=Starter(kinds=("command",)))
    format: Optional[str] = key(one_of("csv", "json"), None, type='"csv" or "json"',
                                meaning="Format of the command's output.", example='"json"',
                                default_doc="sniffed: a leading [ or { means JSON",
                                starter=Starter('"csv"', active=False, kinds=("command",)))
    timeout: float = key(seconds(0.1, 86400), 120.0, type="seconds", meaning="How long the command may run.",
                         example="300", default_doc="120", decode=as_float,
                         starter=Starter(active=False, kinds=("command",)))
    trailer: bool = key(BOOL, False, type="bool",
                        meaning="The command's output ends with a line `# rows: N`; a missing or wrong count "
                                "aborts the run (the export was cut).", example="true",
                        starter=Starter(active=False, kinds=("command",)))
    url: str = key(_http_url, "https://api.lastpass.com/business", type="URL",
                   meaning="LastPass Business API base (kind lastpass); plain http only on loopback.",
                   example='"https://api.lastpass.com/business"', default_doc='"https://api.lastpass.com/business"',
                   starter=Starter(active=False, kinds=("lastpass",)))
    api_key: SecretRef = secret(what="the LastPass API key (Admin Console > Advanced > LastPass API)",
                                env="LASTPASS_API_KEY", file="lastpass-api-key",
                                starter=Starter('"lastpass-api-key"', kinds=("lastpass",)))
    count_statuses: Tuple[str, ...] = key(
        string_list, ("enrolled", "pending-invitation", "expired-invitation", "awaiting-approval", "staged"),
        type="list of statuses",
        meaning="Users whose accountStatus is listed are billed seats (kind lastpass); LastPass frees a licence "
                "only when a user is disabled or deleted (see Connecting LastPass).",
        example='["enrolled"]', default_doc='every status but "disabled"', decode=as_tuple,
        starter=Starter(active=False, kinds=("lastpass",)))
    sku: str = key(STRING, "LastPass", type="string", meaning="The SKU of a managed company without the mfa add-on "
                   "(kind lastpass).", example='"LastPass"', default_doc='"LastPass"',
                   starter=Starter(active=False, kinds=("lastpass",)))
    mfa_sku: str = key(STRING, "LastPass+MFA", type="string",
                       meaning="The SKU of a managed company with the mfa add-on (kind lastpass).",
                       example='"LastPass+MFA"', default_doc='"LastPass+MFA"',
                       starter=Starter(active=False, kinds=("lastpass",)))


@section("mapping")
class MappingSettings(NamedTuple):
    file: Optional[Path] = key(STRING, None, type="path",
                               meaning="CSV pinning customers to PSA companies (see Mapping file format).",
                               example='"mapping.csv"', default_doc="-", decode=as_path, starter=Starter(active=False))


@section("psa")
class PsaSettings(NamedTuple):
    kind: Optional[str] = key(choice(psa_kinds.kinds), None,
                              type=" or ".join(f'"{k}"' for k in psa_kinds.kinds()), meaning="Which PSA.",
                              example='"connectwise"', default_doc="-", starter=Starter('"{kind}"'))
    url: Optional[str] = key(STRING, None, type="URL",
                             meaning="PSA API base (ConnectWise: the site; Autotask: optional, found by zone lookup).",
                             example='"https://api-na.myconnectwise.net"', default_doc="-",
                             starter=Starter('"na.myconnectwise.net"', kinds=("connectwise",)))
    company: Optional[str] = key(STRING, None, type="string", meaning="ConnectWise company id (login company).",
                                 example='"msp"', default_doc="-", starter=Starter(kinds=("connectwise",)))
    public_key: Optional[str] = key(STRING, None, type="string", meaning="ConnectWise API member public key.",
                                    example='"AbCdEf"', default_doc="-", starter=Starter(kinds=("connectwise",)))
    private_key: SecretRef = secret(what="the ConnectWise private key", env="CW_PRIVATE_KEY", file="cw-private-key",
                                    starter=Starter('"cw-private-key"', kinds=("connectwise",)))
    client_id: Optional[str] = key(STRING, None, type="string", meaning="ConnectWise developer clientId.",
                                   example='"00000000-0000-0000-0000-000000000000"', default_doc="-",
                                   starter=Starter(kinds=("connectwise",)))
    api_version: str = key(STRING, "2025.1", type="string", meaning="ConnectWise API model version header.",
                           example='"2025.1"', default_doc='"2025.1"')
    username: Optional[str] = key(STRING, None, type="string", meaning="Autotask API user name.",
                                  example='"api@msp.example"', default_doc="-", starter=Starter(kinds=("autotask",)))
    secret: SecretRef = secret(what="the Autotask API secret", env="AUTOTASK_SECRET", file="autotask-secret",
                               starter=Starter('"autotask-secret"', kinds=("autotask",)))
    integration_code: Optional[str] = key(STRING, None, type="string", meaning="Autotask API tracking identifier.",
                                          example='"ABC123"', default_doc="-", starter=Starter(kinds=("autotask",)))
    budget_share: float = key(number_range(0.05, 0.95, "a share"), 0.5, type="share 0.05-0.95",
                              meaning="Autotask: the share of the database's hourly allowance (all integrations "
                                      "together) a run may take it to.", example="0.5", decode=as_float)
    concurrency: int = key(int_range(1, 64), 8, type="integer 1-64", meaning="Parallel PSA requests.", example="8")
    timeout: float = key(seconds(0.1, 3600), 30.0, type="seconds", meaning="PSA request timeout.", example="30",
                         default_doc="30", decode=as_float)
    max_retries: int = key(int_range(0, 20), 5, type="integer 0-20",
                           meaning="Retries of a throttled or failed request.", example="5")
    ca_file: Optional[Path] = key(STRING, None, type="path", meaning="Extra CA bundle for the PSA.",
                                  example='"ca.pem"', default_doc="system CAs", decode=as_path)


@section("guard")
class GuardSettings(NamedTuple):
    """What an unattended run refuses to write (run.safety; README "What psabill refuses to do unattended")."""

    enabled: bool = key(BOOL, True, type="bool", meaning="Hold what looks like a broken source in unattended runs "
                        "(`run --scheduled`, `run --yes`) for `psabill approve`.", example="true")
    hold_empty: bool = key(BOOL, True, type="bool", meaning="Hold the whole run when the source has no rows but the "
                           "last applied run had some.", example="true")
    hold_unterminated: bool = key(BOOL, True, type="bool", meaning="Hold the whole run when the source's last row "
                                  "has no line end (the file or the command's output was cut).", example="true")
    max_missing_share: float = key(_share, 0.25, type="share 0-1", meaning="Hold the whole run when more than this "
                                   "share of the last applied run's (customer, SKU) rows is missing from the "
                                   "source.", example="0.25", decode=as_float)
    max_zeroed_share: float = key(_share, 0.5, type="share 0-1", meaning="Hold the whole run when it would set more "
                                  "than this share of the lines holding seats to 0.", example="0.5",
                                  decode=as_float)
    max_sku_drop: float = key(_share, 0.5, type="share 0-1", meaning="Hold the whole run when a SKU's total seats "
                              "would fall by more than this share.", example="0.5", decode=as_float)
    max_line_factor: float = key(_factor, 10.0, type="factor", meaning="Hold a line that would grow to more than "
                                 "this many times its seats, and by more than line_slack.", example="10",
                                 decode=as_float)
    line_slack: int = key(int_range(0, 1_000_000), 50, type="integer", meaning="Seats a line may always grow by "
                          "(max_line_factor holds only beyond it).", example="50")
    max_seats: int = key(int_range(1, 1_000_000_000), 10_000, type="integer",
                         meaning="Hold a line whose seat count is above this.", example="10000")
    hold_closed_period: bool = key(BOOL, True, type="bool", meaning="Hold a line whose change would land on an "
                                   "invoice for a billing period that has ended (ConnectWise: the agreement's next "
                                   "invoice, not yet generated, is for an earlier billing cycle).", example="true")


@section("history")
class HistorySettings(NamedTuple):
    retention_days: int = key(int_range(1, 1_000_000), 400, type="integer", meaning="Days of run history kept.",
                              example="400")
    site_dir: Optional[Path] = key(STRING, None, type="path",
                                   meaning="Where the static history site is written after every run.",
                                   example='"/var/www/billing"', default_doc="site in the state dir", decode=as_path)
    site_url: Optional[str] = key(_http_url, None, type="URL",
                                  meaning="Where the admin serves site_dir; the email links to the run's page.",
                                  example='"https://billing.msp.example/"', default_doc="-")
    site_days: int = key(int_range(1, 3650), 60, type="integer", meaning="Days of runs the site's index shows.",
                         example="60")


def _lease(value: Any) -> Optional[str]:
    problem = duration_text(value)
    if problem is None and not 2 <= parse_duration(value).total_seconds() <= 86400:
        problem = "must be from 2s to 1d"
    return problem


@section("run")
class RunSettings(NamedTuple):
    lock_timeout: float = key(duration_text, 600.0, type="duration",
                              meaning="How long a run waits for another on this host to finish.", example='"10m"',
                              default_doc='"10m"', decode=as_seconds)
    lease: float = key(_lease, 120.0, type="duration 2s-1d",
                       meaning="How long the run lease lasts unrenewed. A run renews it every quarter of this and "
                               "stops writing after half of it unrenewed; another host takes it over only once it "
                               "expired (a host that died holding it blocks the others this long).",
                       example='"2m"', default_doc='"2m"', decode=as_seconds)


@section("state")
class StateSettings(NamedTuple):
    url: Optional[str] = key(_state_url, None, type="postgresql:// URL",
                             meaning="A PostgreSQL ledger several hosts share (PSABILL_STATE_URL wins); keep its "
                                     "password out of the file.",
                             example='"postgresql://psabill@db.example/psabill"',
                             default_doc="SQLite state.db in the state dir", decode=or_none)


@section("log")
class LogSettings(NamedTuple):
    max_bytes: int = key(int_range(1, 1_000_000_000), 1_000_000, type="integer",
                         meaning="Log file size before it rotates.", example="1000000")
    backups: int = key(int_range(0, 100), 5, type="integer 0-100", meaning="Rotated log files kept.", example="5")


class Table(NamedTuple):
    """A section whose keys are the admin's own ([products]: SKU = PSA product)."""

    name: str
    check: Any
    type: str
    meaning: str
    example: str
    starter: Tuple[Tuple[str, str], ...] = ()  # (key, TOML value) lines config init writes


PRODUCTS = Table("products", _product, "string, or an integer (an Autotask service id)",
                 "SKU in the source = the PSA product it bills as.", '"SEATS-STD"  # e.g. LastPass = "SEATS-STD"',
                 starter=(("LastPass", '"SEATS-STD"'), ('"LastPass+MFA"', '"SEATS-MFA"')))


class Schema(NamedTuple):
    """The sections of a config, in the order the reference and the starter show them."""

    top: Type[Any] = TopSettings
    account: Type[Any] = AccountSettings
    schedule: Type[Any] = ScheduleSettings
    notify: Type[Any] = NotifySettings
    source: Type[Any] = SourceSettings
    products: Table = PRODUCTS
    mapping: Type[Any] = MappingSettings
    psa: Type[Any] = PsaSettings
    guard: Type[Any] = GuardSettings
    history: Type[Any] = HistorySettings
    run: Type[Any] = RunSettings
    state: Type[Any] = StateSettings
    log: Type[Any] = LogSettings

    def section_of(self, name: str) -> Any:
        """The section class (or Table) called ``name`` ("notify.smtp" finds the sub-table)."""
        head, _, rest = name.partition(".")
        found = getattr(self, head, None) if head and head not in self._fields[:1] else None
        if found is None or not rest:
            return found
        for part in rest.split("."):
            declaration = found.KEYS.get(part)
            found = declaration.sub if declaration is not None else None
            if found is None:
                return None
        return found


SCHEMA = Schema()

# Keys whose values are credentials besides the declared secrets: a URL with a password in it.
PASSWORD_URL_KEYS = (("state", "url"),)
