"""The config reference: every key of the schema, documented, and the Markdown made from it.

:data:`DOCS` describes each key of :data:`psabill.config.settings.SCHEMA` (type,
default, meaning, example); :func:`render_reference` turns them into the
reference that the README embeds and ``psabill config reference`` prints, and
``psabill config init`` takes its comments from the same table. A test fails
when a schema key has no entry, or the README's copy drifts.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

from psabill.config.settings import (ANY_STR_KEYS, DEFAULT_CATCH_UP, DEFAULT_LOCK_TIMEOUT, DEFAULT_RETENTION_DAYS, SCHEMA,
                              VERSION)

class KeyDoc(NamedTuple):
    """One config key, described for people: its type, default, meaning and an example value (TOML)."""

    type: str
    default: str
    meaning: str
    example: str


_NO_DEFAULT = "-"

# Every key of SCHEMA, by dotted path ("section.key", "notify.smtp.host"; top-level keys bare;
# "products.*" for the free-form table). tests/test_config_reference.py checks that the two agree
# and that the README's reference is what render_reference() produces.
DOCS: Dict[str, KeyDoc] = {
    "version": KeyDoc("integer", str(VERSION), "Config format version; written by psabill.", str(VERSION)),
    "account.name": KeyDoc("string", '""', "Account name shown in the report email.", '"Example MSP"'),
    "account.timezone": KeyDoc("IANA zone", "the host's zone", "Zone the schedule's hour is in.",
                               '"America/New_York"'),
    "schedule.enabled": KeyDoc("bool", "true", "Whether cron runs the schedule (`schedule enable/disable`).",
                               "true"),
    "schedule.mode": KeyDoc('"monthly", "weekly" or "daily"', "no schedule", "How often the update runs.",
                            '"weekly"'),
    "schedule.day": KeyDoc('1-31 or "last"', _NO_DEFAULT,
                           "Day of the month (monthly); past a month's end runs on its last day.", '"last"'),
    "schedule.weekday": KeyDoc("weekday name", _NO_DEFAULT, "Day of the week (weekly): mon..sun.", '"tue"'),
    "schedule.hour": KeyDoc("integer 0-23", "0", "Full hour, in the account zone.", "9"),
    "schedule.start": KeyDoc("date", _NO_DEFAULT, "No run before this date (account zone).", "2026-01-01"),
    "schedule.saved_at": KeyDoc("date-time with offset", _NO_DEFAULT,
                                "When the schedule was saved (written by psabill; nothing earlier runs).",
                                "2026-01-01T09:00:00Z"),
    "schedule.enabled_at": KeyDoc("date-time with offset", _NO_DEFAULT,
                                  "When the schedule was last enabled (written by psabill; nothing that fell "
                                  "due while it was disabled runs).", "2026-01-05T09:00:00Z"),
    "schedule.catch_up": KeyDoc("duration", f'"{DEFAULT_CATCH_UP}"',
                                "How late a missed occurrence may still run (at least 3h).", '"24h"'),
    "notify.emails": KeyDoc("list of addresses", "[]", "Who gets the results email.",
                            '["billing@msp.example"]'),
    "notify.on_manual": KeyDoc("bool", "false", "Also email the results of runs started by hand.", "true"),
    "notify.transport": KeyDoc('"smtp", "sendmail" or "file"', '"smtp" if [notify.smtp] is set, else "sendmail"',
                               "How the email is delivered.", '"smtp"'),
    "notify.from": KeyDoc("address", "psabill@<host>", "Sender address of the email.", '"psabill@msp.example"'),
    "notify.template_dir": KeyDoc("path", "built-in templates",
                                  "Directory with subject.txt, body.txt and body.html overrides.", '"templates"'),
    "notify.history_url": KeyDoc("URL", _NO_DEFAULT,
                                 "Link to a run in the email; `{run_id}` is replaced.",
                                 '"https://billing.msp.example/runs/{run_id}"'),
    "notify.ping_url": KeyDoc("URL", _NO_DEFAULT,
                              "Dead-man's-switch check (healthchecks.io, cronitor): a real run requests "
                              "<url>/start, then <url> on success or <url>/fail on failure or abort.",
                              '"https://hc-ping.com/your-uuid"'),
    "notify.smtp.host": KeyDoc("host name", '"localhost"', "SMTP server.", '"smtp.msp.example"'),
    "notify.smtp.port": KeyDoc("integer 1-65535", "465 (ssl), 587 (starttls), 25 (none)", "SMTP port.", "587"),
    "notify.smtp.security": KeyDoc('"starttls", "ssl" or "none"', '"starttls"', "TLS mode.", '"starttls"'),
    "notify.smtp.username": KeyDoc("string", "no login", "SMTP login.", '"psabill"'),
    "notify.smtp.password": KeyDoc("string (secret)", _NO_DEFAULT,
                                   "SMTP password as a literal; prefer password_file or password_env "
                                   "(a literal needs a mode 0600 config).", '"..."'),
    "notify.smtp.password_env": KeyDoc("variable name", _NO_DEFAULT, "Read the SMTP password from this variable.",
                                       '"PSABILL_SMTP_PASSWORD"'),
    "notify.smtp.password_file": KeyDoc("path", _NO_DEFAULT, "Read the SMTP password from this file.",
                                        '"smtp-password"'),
    "notify.smtp.timeout": KeyDoc("seconds", "30", "SMTP connect/read timeout.", "30"),
    "notify.smtp.ca_file": KeyDoc("path", "system CAs", "Extra CA bundle for the SMTP server.", '"ca.pem"'),
    "notify.sendmail.command": KeyDoc("argv list", '["/usr/sbin/sendmail", "-t", "-oi"]',
                                      "Command for transport = \"sendmail\".", '["/usr/sbin/sendmail", "-t", "-oi"]'),
    "notify.file.dir": KeyDoc("path", _NO_DEFAULT, "Directory that gets .eml files (transport = \"file\").",
                              '"outbox"'),
    "source.kind": KeyDoc('"csv", "json" or "command"', _NO_DEFAULT, "Where seat counts come from (see Usage source formats).",
                          '"csv"'),
    "source.path": KeyDoc("path", _NO_DEFAULT, "The CSV or JSON file (kind csv/json).", '"usage.csv"'),
    "source.command": KeyDoc("argv list", _NO_DEFAULT,
                             "Command printing CSV or JSON (kind command); run without a shell in the "
                             "config's directory.", '["./export-seats", "--all"]'),
    "source.format": KeyDoc('"csv" or "json"', "sniffed: a leading [ or { means JSON",
                            "Format of the command's output.", '"json"'),
    "source.timeout": KeyDoc("seconds", "120", "How long the command may run.", "300"),
    "products.*": KeyDoc("string", _NO_DEFAULT, "SKU in the source = PSA product id it bills as.",
                         '"SEATS-STD"  # e.g. LastPass = "SEATS-STD"'),
    "mapping.file": KeyDoc("path", _NO_DEFAULT, "CSV pinning customers to PSA companies (see Mapping file format).",
                           '"mapping.csv"'),
    "psa.kind": KeyDoc('"connectwise" or "autotask"', _NO_DEFAULT, "Which PSA.", '"connectwise"'),
    "psa.url": KeyDoc("URL", _NO_DEFAULT, "PSA API base URL.", '"https://api-na.myconnectwise.net"'),
    "psa.company": KeyDoc("string", _NO_DEFAULT, "ConnectWise company id (login company).", '"msp"'),
    "psa.public_key": KeyDoc("string", _NO_DEFAULT, "ConnectWise API member public key.", '"AbCdEf"'),
    "psa.private_key": KeyDoc("string (secret)", _NO_DEFAULT,
                              "ConnectWise private key as a literal; prefer private_key_file or private_key_env.",
                              '"..."'),
    "psa.private_key_env": KeyDoc("variable name", _NO_DEFAULT, "Read the ConnectWise private key from this variable.",
                                  '"CW_PRIVATE_KEY"'),
    "psa.private_key_file": KeyDoc("path", _NO_DEFAULT, "Read the ConnectWise private key from this file.",
                                   '"cw-private-key"'),
    "psa.client_id": KeyDoc("string", _NO_DEFAULT, "ConnectWise developer clientId.", '"00000000-0000-0000-0000-000000000000"'),
    "psa.api_version": KeyDoc("string", '"2025.1"', "ConnectWise API version header.", '"2025.1"'),
    "psa.username": KeyDoc("string", _NO_DEFAULT, "Autotask API user name.", '"api@msp.example"'),
    "psa.secret": KeyDoc("string (secret)", _NO_DEFAULT,
                         "Autotask API secret as a literal; prefer secret_file or secret_env.", '"..."'),
    "psa.secret_env": KeyDoc("variable name", _NO_DEFAULT, "Read the Autotask secret from this variable.",
                             '"AUTOTASK_SECRET"'),
    "psa.secret_file": KeyDoc("path", _NO_DEFAULT, "Read the Autotask secret from this file.", '"autotask-secret"'),
    "psa.integration_code": KeyDoc("string", _NO_DEFAULT, "Autotask API tracking identifier.", '"ABC123"'),
    "psa.concurrency": KeyDoc("integer 1-64", "8", "Parallel PSA requests.", "8"),
    "psa.timeout": KeyDoc("seconds", "30", "PSA request timeout.", "30"),
    "psa.max_retries": KeyDoc("integer 0-20", "5", "Retries of a throttled or failed request.", "5"),
    "psa.ca_file": KeyDoc("path", "system CAs", "Extra CA bundle for the PSA.", '"ca.pem"'),
    "history.retention_days": KeyDoc("integer", str(DEFAULT_RETENTION_DAYS), "Days of run history kept.", "400"),
    "state.url": KeyDoc("postgresql:// URL", "SQLite state.db in the state dir",
                        "A PostgreSQL ledger several hosts share (PSABILL_STATE_URL wins); keep its password "
                        "out of the file.", '"postgresql://psabill@db.example/psabill"'),
    "run.lock_timeout": KeyDoc("duration", f'"{DEFAULT_LOCK_TIMEOUT}"',
                               "How long a run waits for another to finish.", '"10m"'),
    "log.max_bytes": KeyDoc("integer", "1000000", "Log file size before it rotates.", "1000000"),
    "log.backups": KeyDoc("integer 0-100", "5", "Rotated log files kept.", "5"),
}


def schema_keys(spec: Optional[Mapping[str, Any]] = None, prefix: str = "") -> List[str]:
    """Every key SCHEMA accepts, as dotted paths, in schema order."""
    keys: List[str] = []
    for name, sub in (SCHEMA if spec is None else spec).items():
        if name == "":
            keys.extend(schema_keys(sub, ""))
        elif sub == ANY_STR_KEYS:
            keys.append(f"{prefix}{name}.*")
        elif isinstance(sub, dict):
            keys.extend(schema_keys(sub, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


_FORMATS = """\
## Usage source formats

`[source] kind = "csv"` reads a UTF-8 file (no byte-order mark, LF line
endings) with a header row naming `customer`, `sku` and `seats`, and
optionally `psa_company`; other columns are ignored. `seats` is a whole
number, 0 or more. `sku` must be a key of `[products]`.

```csv
customer,sku,seats,psa_company
CUST00001,LastPass,25,
Globex Corporation,LastPass,40,GLOBEX
```

`[source] kind = "json"` reads a list of objects with the same fields
(`seats` an integer, `psa_company` a string or null):

```json
[{"customer": "CUST00001", "sku": "LastPass", "seats": 25},
 {"customer": "Globex Corporation", "sku": "LastPass", "seats": 40, "psa_company": "GLOBEX"}]
```

`[source] kind = "command"` runs `command` (an argv list, no shell) in the
config file's directory for at most `timeout` seconds; its stdout is CSV or
JSON as above (`format`, else sniffed). Any bad row aborts the run before the
PSA is touched, with one line naming the row.

## Mapping file format

`[mapping] file` names a CSV with the header `customer,psa_company[,agreement]`:
one row per customer (matched ignoring case) that pins it to a PSA company
and, optionally, one agreement. A duplicate customer or an empty
`psa_company` aborts the run.

```csv
customer,psa_company,agreement
Globex Corporation,GLOBEX,Managed Services 2026
CUST00007,ACME,
```

## Secrets

`psa.private_key` (ConnectWise), `psa.secret` (Autotask) and
`notify.smtp.password` each come from exactly one of: the key itself (a
literal: the config must then be mode 0600), `<key>_env` (an environment
variable) or `<key>_file` (a file, relative to the config's directory).
`psabill config show` masks literals.

## Commands

* `psabill config init [--psa connectwise|autotask] [--source csv|json|command] [--force]`
  writes a commented starter config (mode 0600).
* `psabill config path` prints the config file in use.
* `psabill config show [--json]` prints it with literal secrets masked.
* `psabill config reference` prints this page.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_reference(level: int = 1) -> str:
    """Every key of SCHEMA, from DOCS, plus the file formats, as Markdown; headings start at ``level``."""
    out = [
        "# psabill config reference",
        "",
        "<!-- Generated by `python -m psabill.config.reference` (or `psabill config reference`) from",
        "     psabill.config.reference.DOCS; tests/test_config_reference.py fails when the README drifts. -->",
        "",
        "The config is TOML, at `--config`, else `$PSABILL_CONFIG`, else",
        "`~/.config/psabill/config.toml`. Paths in it are relative to its directory.",
        "An unknown key or a bad value is refused when the config is loaded.",
        "",
    ]
    section = None
    for key in schema_keys():
        head, _, name = key.rpartition(".")
        if head != section:
            section = head
            if out[-1] != "":
                out.append("")
            out += [f"## [{head}]" if head else "## Top level", "",
                    "| Key | Type | Default | Meaning | Example |", "|---|---|---|---|---|"]
        doc = DOCS[key]
        out.append(f"| `{name}` | {_cell(doc.type)} | {_cell(doc.default)} | {_cell(doc.meaning)} "
                   f"| `{_cell(doc.example)}` |")
    return _demote("\n".join(out) + "\n\n" + _FORMATS, level - 1)


def _demote(markdown: str, by: int) -> str:
    """Add ``by`` levels to every heading outside code fences."""
    lines, fenced = [], False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            line = "#" * by + line
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":  # python -m psabill.config.reference
    sys.stdout.write(render_reference())
