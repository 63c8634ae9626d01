"""Check requests psabill sends against compact fixtures of the published PSA schemas.

The fixtures in ``schemas/`` were extracted by hand from the published documents
(their ``_source`` keys name repository, path and commit). This module only reads
those fixtures; it never needs the original documents.

Both checkers return a list of human-readable problems; an empty list means the
request fits the schema as far as these checks go. Every problem names what is
wrong (the field, header, path or method), so a failing test says why.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, urlsplit

SCHEMAS = Path(__file__).resolve().parent / "schemas"

Json = Any
FieldType = Union[str, Dict[str, str]]


@lru_cache(maxsize=None)
def schema(name: str) -> Dict[str, Any]:
    """The fixture ``schemas/<name>.json`` (``connectwise`` or ``autotask``)."""
    with open(SCHEMAS / f"{name}.json", encoding="utf-8") as handle:
        data: Dict[str, Any] = json.load(handle)
    return data


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _template_regex(template: str, flags: int = 0) -> "re.Pattern[str]":
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}/?$", flags)


# =============================================================================
# ConnectWise PSA REST 3.0
# =============================================================================

CW_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_CW_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<date>\[[^\]]*\])
      | (?P<op><=|>=|!=|=|<|>)
      | (?P<paren>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
      | (?P<number>-?\d+(?:\.\d+)?)
    )""",
    re.VERBOSE,
)
_CW_WORD_OPS = {"like", "contains", "in"}
_CW_KEYWORDS = {"and", "or", "not", "null", "true", "false"} | _CW_WORD_OPS


class _ConditionError(Exception):
    pass


def _cw_tokens(text: str) -> List[Tuple[str, str]]:
    tokens: List[Tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _CW_TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise _ConditionError(f"cannot read conditions at {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value.lower() in _CW_KEYWORDS:
            kind = "keyword"
            value = value.lower()
        tokens.append((kind, value))
        pos = match.end()
    return tokens


class _CwConditionChecker:
    """Recursive descent over ConnectWise's ``conditions`` grammar, collecting field problems."""

    def __init__(self, text: str, entity: str, where: str) -> None:
        self.tokens = _cw_tokens(text)
        self.pos = 0
        self.entity = entity
        self.where = where
        self.problems: List[str] = []

    def peek(self) -> Tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self) -> Tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def expect(self, kind: str, value: Optional[str] = None) -> Tuple[str, str]:
        token = self.take()
        if token[0] != kind or (value is not None and token[1] != value):
            raise _ConditionError(f"expected {value or kind} but found {token[1] or 'the end'!r}")
        return token

    def run(self) -> List[str]:
        if not self.tokens:
            raise _ConditionError("is empty")
        self.expression()
        if self.peek()[0] != "end":
            raise _ConditionError(f"unexpected {self.peek()[1]!r}")
        return self.problems

    def expression(self) -> None:
        self.term()
        while self.peek() in (("keyword", "and"), ("keyword", "or")):
            self.take()
            self.term()

    def term(self) -> None:
        if self.peek() == ("paren", "("):
            self.take()
            self.expression()
            self.expect("paren", ")")
            return
        if self.peek() == ("keyword", "not"):
            self.take()
            self.term()
            return
        self.comparison()

    def comparison(self) -> None:
        kind, field = self.take()
        if kind != "word":
            raise _ConditionError(f"expected a field name but found {field or 'the end'!r}")
        ftype = _cw_field_type(self.entity, field)
        if ftype is None:
            self.problems.append(f"{self.where}: {self.entity} has no field {field!r}")
        elif isinstance(ftype, dict):
            self.problems.append(
                f"{self.where}: {self.entity}.{field} is a reference object ({ftype['reference']}); "
                f"compare one of its fields, e.g. {field}/id")
            ftype = None
        negated = False
        if self.peek() == ("keyword", "not"):
            self.take()
            negated = True
        op_kind, op = self.take()
        if op_kind == "keyword" and op == "in":
            self.expect("paren", "(")
            self.value(field, ftype, "in")
            while self.peek() == ("paren", ","):
                self.take()
                self.value(field, ftype, "in")
            self.expect("paren", ")")
        elif op_kind == "keyword" and op in ("like", "contains"):
            self.value(field, ftype, op)
        elif op_kind == "op" and not negated:
            self.value(field, ftype, op)
        else:
            raise _ConditionError(f"expected an operator after {field!r} but found {op or 'the end'!r}")

    def value(self, field: str, ftype: Optional[str], op: str) -> None:
        kind, text = self.take()
        if kind == "keyword" and text in ("null", "true", "false"):
            literal = text if text == "null" else "boolean"
        elif kind in ("string", "date", "number"):
            literal = kind
        else:
            raise _ConditionError(f"expected a value for {field!r} but found {text or 'the end'!r}")
        if kind == "date" and not CW_DATE.match(text[1:-1]):
            self.problems.append(f"{self.where}: {field} {op} {text}: a date must be [YYYY-MM-DDTHH:MM:SSZ]")
        if ftype is None or ftype in ("any", "object"):
            return
        fits = {
            "string": ("string", "null"),
            "integer": ("number", "null") if kind != "number" or re.fullmatch(r"-?\d+", text) else ("null",),
            "number": ("number", "null"),
            "boolean": ("boolean", "null"),
            "date-time": ("date", "null"),
        }.get(ftype, ())
        if literal not in fits:
            self.problems.append(
                f"{self.where}: {self.entity}.{field} is {ftype} but is compared with the {literal} {text}")
        elif op in ("like", "contains") and ftype != "string":
            self.problems.append(f"{self.where}: '{op}' needs a string field but {field} is {ftype}")
        elif op in ("<", "<=", ">", ">=") and ftype == "boolean":
            self.problems.append(f"{self.where}: {field} is boolean; '{op}' does not order booleans")
        elif literal == "null" and op not in ("=", "!="):
            self.problems.append(f"{self.where}: {field} {op} null: only = and != compare with null")


def _cw_field_type(entity: str, path: str) -> Optional[FieldType]:
    """The schema type of ``company/id`` on ``entity``; None when a part of the path is unknown."""
    spec = schema("connectwise")
    fields: Mapping[str, FieldType] = spec["entities"].get(entity, {})
    parts = path.split("/")
    for index, part in enumerate(parts):
        ftype = fields.get(part)
        if ftype is None:
            return None
        last = index == len(parts) - 1
        if last:
            return ftype
        if ftype == "object":  # _info: a map of strings whose keys the schema does not list
            return "any"
        if not isinstance(ftype, dict):
            return None
        fields = spec["references"].get(ftype["reference"], {})
    return None


def _fits(ftype: FieldType, value: Any, date_time: "re.Pattern[str]") -> bool:
    """Whether ``value`` has the schema type ``ftype``; ``date_time`` is the PSA's date-time format."""
    if isinstance(ftype, dict):  # a reference object (ConnectWise)
        return isinstance(value, dict)
    if ftype == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ftype == "string":
        return isinstance(value, str)
    if ftype == "boolean":
        return isinstance(value, bool)
    if ftype == "date-time":
        return isinstance(value, str) and bool(date_time.match(value))
    return True


def _cw_value_fits(ftype: FieldType, value: Any) -> bool:
    return value is None or _fits(ftype, value, CW_DATE)


def connectwise_problems(method: str, url: str, headers: Mapping[str, str], body: Json = None) -> List[str]:
    """Problems of one ConnectWise request against ``schemas/connectwise.json``."""
    spec = schema("connectwise")
    problems: List[str] = []
    method = method.upper()
    parts = urlsplit(url)
    path = parts.path

    info = spec["companyinfo"]
    if re.fullmatch(r"/login/companyinfo/[^/]+/?", path, re.IGNORECASE):
        if method != info["method"]:
            problems.append(f"{method} {path}: companyinfo is read with {info['method']}")
        return problems

    base = spec["base_path"]
    at = path.find(base + "/")
    if at < 0:
        return [f"{method} {path}: not under {base}"]
    prefix, rest = path[:at], path[at + len(base):]
    if not re.match(spec["codebase_prefix"]["pattern"], prefix):
        problems.append(f"{method} {path}: {prefix or 'nothing'!r} before {base} is not a codebase "
                        f"such as {spec['codebase_prefix']['examples'][0]}")

    endpoint: Optional[Dict[str, Any]] = None
    path_params: Dict[str, str] = {}
    methods: List[str] = []
    for candidate in spec["endpoints"]:
        match = _template_regex(candidate["path"]).match(rest)
        if not match:
            continue
        methods.append(candidate["method"])
        if candidate["method"] == method:
            endpoint, path_params = candidate, match.groupdict()
    if endpoint is None:
        if methods:
            return problems + [f"{method} {rest}: the schema allows only {', '.join(sorted(set(methods)))} there"]
        return problems + [f"{method} {rest}: no such path among those psabill uses "
                           f"({', '.join(sorted({e['path'] for e in spec['endpoints']}))})"]
    for name, value in path_params.items():
        if endpoint["path_params"].get(name) == "integer" and not re.fullmatch(r"\d+", value):
            problems.append(f"{method} {rest}: path parameter {name}={value!r} is not an integer")

    for name, rule in spec["headers"].items():
        value = _header(headers, name)
        if value is None or not value.strip():
            if rule["required"]:
                problems.append(f"{method} {rest}: missing header {name}")
        elif "pattern" in rule and not re.match(rule["pattern"], value):
            problems.append(f"{method} {rest}: header {name} has an unexpected form")

    entity = endpoint["entity"]
    query = parse_qs(parts.query, keep_blank_values=True)
    if "pageId" in query and (_header(headers, "pagination-type") or "").lower() != "forward-only":
        problems.append(f"{method} {rest}: pageId without the header pagination-type: forward-only "
                        "(ConnectWise then ignores pageId and pages navigably from the start)")
    for name, values in query.items():
        if name not in endpoint["query"]:
            problems.append(f"{method} {rest}: unknown query parameter {name!r}")
            continue
        value = values[-1]
        if spec["list_query_parameters"].get(name) == "integer" and not re.fullmatch(r"\d+", value):
            problems.append(f"{method} {rest}: {name}={value!r} is not an integer")
        if name == "pageSize" and value.isdigit() and not 1 <= int(value) <= 1000:
            problems.append(f"{method} {rest}: pageSize={value} is outside 1..1000")
        if name == "fields":
            for field in (f.strip() for f in value.split(",")):
                if _cw_field_type(entity, field) is None:
                    problems.append(f"{method} {rest}: fields names {field!r}, which {entity} does not have")
        if name == "orderBy":
            for clause in value.split(","):
                field = clause.strip().split(" ")[0]
                if _cw_field_type(entity, field) is None:
                    problems.append(f"{method} {rest}: orderBy names {field!r}, which {entity} does not have")
        if name == "conditions":
            try:
                problems.extend(_CwConditionChecker(value, entity, f"{method} {rest} conditions").run())
            except _ConditionError as error:
                problems.append(f"{method} {rest} conditions {value!r}: {error}")

    if method == "PATCH":
        problems.extend(_cw_patch_problems(entity, body, f"{method} {rest}"))
    return problems


def _cw_patch_problems(entity: str, body: Json, where: str) -> List[str]:
    if not isinstance(body, list) or not body:
        return [f"{where}: the body must be a non-empty JSON Patch list of operations"]
    problems: List[str] = []
    for index, operation in enumerate(body):
        if not isinstance(operation, dict):
            problems.append(f"{where}: operation {index} is not an object")
            continue
        unknown = set(operation) - {"op", "path", "value"}
        if unknown:
            problems.append(f"{where}: operation {index} has unknown keys {sorted(unknown)}")
        op = operation.get("op")
        if op not in ("replace", "add", "remove"):
            problems.append(f"{where}: operation {index} has op {op!r}; expected replace, add or remove")
        path = operation.get("path")
        if not isinstance(path, str) or not path.strip("/"):
            problems.append(f"{where}: operation {index} has no path")
            continue
        field = path.strip("/")
        ftype = _cw_field_type(entity, field)
        if ftype is None:
            problems.append(f"{where}: PATCH path {path!r} is not a field of {entity}")
            continue
        if op != "remove" and not _cw_value_fits(ftype, operation.get("value")):
            problems.append(f"{where}: PATCH {field} is {ftype} but the value is {operation.get('value')!r}")
    return problems


# =============================================================================
# Datto Autotask REST v1.0
# =============================================================================


def _at_fields(entity: str) -> Dict[str, str]:
    """Field name (lower case) -> type for a query entity or a model."""
    spec = schema("autotask")
    if entity in spec["entities"]:
        fields = spec["entities"][entity]["fields"]
    else:
        fields = spec["models"].get(entity, {})
    return {name.lower(): ftype for name, ftype in fields.items()}


def _at_value_fits(ftype: str, value: Any) -> bool:
    return _fits(ftype, value, re.compile(schema("autotask")["date_time_format"]["pattern"]))


def _at_filter_problems(entity: str, filters: Json, where: str) -> List[str]:
    spec = schema("autotask")
    ops = spec["filter_operators"]
    fields = _at_fields(entity)
    problems: List[str] = []
    if not isinstance(filters, list):
        return [f"{where}: filter must be a list of conditions"]
    for item in filters:
        if not isinstance(item, dict):
            problems.append(f"{where}: filter item {item!r} is not an object")
            continue
        unknown = {k for k in item if k.lower() not in {"op", "field", "value", "udf", "items"}}
        if unknown:
            problems.append(f"{where}: filter item has unknown keys {sorted(unknown)}")
        op = item.get("op")
        if op in ops["group"]:
            group = item.get("items")
            if not isinstance(group, list) or not group:
                problems.append(f"{where}: '{op}' group needs a non-empty items list")
            else:
                problems.extend(_at_filter_problems(entity, group, where))
            continue
        known = ops["comparison"] + ops["string"] + ops["existence"] + ops["list"]
        if op not in known:
            problems.append(f"{where}: unknown filter operator {op!r}")
            continue
        field = item.get("field")
        if not isinstance(field, str):
            problems.append(f"{where}: filter item with op {op!r} names no field")
            continue
        if item.get("udf") is True:
            continue  # user-defined fields are per tenant; the schema cannot know them
        ftype = fields.get(field.lower())
        if ftype is None:
            problems.append(f"{where}: {entity} has no field {field!r}")
            continue
        if op in ops["existence"]:
            continue
        value = item.get("value")
        if op in ops["list"]:
            if not isinstance(value, list) or not value:
                problems.append(f"{where}: '{op}' on {field} takes a non-empty list, not {value!r}")
                continue
            values: Sequence[Any] = value
        else:
            if isinstance(value, list):
                problems.append(f"{where}: '{op}' on {field} takes one value, not a list")
                continue
            values = [value]
        if op in ops["string"] and ftype != "string":
            problems.append(f"{where}: '{op}' needs a string field but {field} is {ftype}")
        for one in values:
            if not _at_value_fits(ftype, one):
                hint = " (a date-time: YYYY-MM-DDTHH:MM:SS)" if ftype == "date-time" else ""
                problems.append(f"{where}: {entity}.{field} is {ftype}{hint} but the filter gives {one!r}")
    return problems


def _at_query_body_problems(entity: str, body: Json, where: str) -> List[str]:
    if not isinstance(body, dict):
        return [f"{where}: the body must be a query object with a filter"]
    problems: List[str] = []
    model = {name.lower(): name for name in schema("autotask")["QueryModel"]}
    for key in body:
        if key.lower() not in model:
            problems.append(f"{where}: unknown query key {key!r} (expected {', '.join(model.values())})")
    lowered = {k.lower(): v for k, v in body.items()}
    if "filter" not in lowered:
        problems.append(f"{where}: the query has no filter")
    else:
        problems.extend(_at_filter_problems(entity, lowered["filter"], where))
    include = lowered.get("includefields")
    if include is not None:
        fields = _at_fields(entity)
        if not isinstance(include, list):
            problems.append(f"{where}: IncludeFields must be a list of field names")
        else:
            for name in include:
                if not isinstance(name, str) or name.lower() not in fields:
                    problems.append(f"{where}: IncludeFields names {name!r}, which {entity} does not have")
    max_records = lowered.get("maxrecords")
    if max_records is not None and (isinstance(max_records, bool) or not isinstance(max_records, int)
                                    or not 1 <= max_records <= 500):
        problems.append(f"{where}: MaxRecords must be a whole number from 1 to 500")
    return problems


def _at_adjustment_problems(body: Json, where: str, model: str = "ContractServiceAdjustmentModel") -> List[str]:
    """A create body (ContractServiceAdjustment or ContractServiceBundleAdjustment) against its v1.json model."""
    spec = schema("autotask")
    name = model[: -len("Model")]
    if not isinstance(body, dict):
        return [f"{where}: the body must be a {name} object"]
    fields = _at_fields(model)
    date_only = {field.lower() for field in spec["date_time_format"]["date_only_fields"][model]}
    problems: List[str] = []
    for key, value in body.items():
        ftype = fields.get(key.lower())
        if ftype is None:
            problems.append(f"{where}: {name} has no field {key!r}")
        elif key.lower() in date_only:
            if not isinstance(value, str) or not re.match(spec["date_time_format"]["date_only_pattern"], value):
                problems.append(f"{where}: {key} is a date-only field and must read YYYY-MM-DDT00:00:00, "
                                f"not {value!r}")
        elif value is not None and not _at_value_fits(ftype, value):
            problems.append(f"{where}: {name}.{key} is {ftype} but the body gives {value!r}")
    return problems


def autotask_problems(method: str, url: str, headers: Mapping[str, str], body: Json = None) -> List[str]:
    """Problems of one Autotask request against ``schemas/autotask.json``."""
    spec = schema("autotask")
    method = method.upper()
    parts = urlsplit(url)
    path = parts.path
    problems: List[str] = []

    version = spec["version_segment"]["spec"]
    prefix = re.match(rf"^{re.escape(spec['base_path'])}/{re.escape(version)}(?=/)", path, re.IGNORECASE)
    if not prefix:
        return [f"{method} {path}: not under {spec['base_path']}/{version}/"]
    rest = f"/{version}" + path[prefix.end():]

    endpoint: Optional[Dict[str, Any]] = None
    entity: Optional[str] = None
    methods: List[str] = []
    query_entities = {e["entity"] for e in spec["endpoints"] if e["path"].endswith("/query")}
    for candidate in spec["endpoints"]:
        match = _template_regex(candidate["path"]).match(rest)
        if not match:
            continue
        named = match.groupdict().get("Entity")
        if named is not None and named not in query_entities:
            continue
        methods.append(candidate["method"])
        if candidate["method"] == method:
            endpoint = candidate
            entity = named or candidate.get("entity")
    if endpoint is None:
        if methods:
            allowed = ", ".join(sorted(set(methods)))
            extra = " (a next page of a POST query is POSTed again with the same body)" if rest.endswith(
                "/query/next") else ""
            return [f"{method} {rest}: the schema allows only {allowed} there{extra}"]
        return [f"{method} {rest}: no such path among those psabill uses"]

    for name, required in spec["headers"].items():
        value = _header(headers, name)
        if required and (value is None or not value.strip()):
            problems.append(f"{method} {rest}: missing header {name}")

    query = parse_qs(parts.query, keep_blank_values=True)
    declared = endpoint.get("query", {})
    for name, rule in declared.items():
        if rule.get("required") and not (query.get(name) and query[name][-1].strip()):
            problems.append(f"{method} {rest}: missing query parameter {name!r}")
    for name in query:
        if name not in declared:
            problems.append(f"{method} {rest}: unknown query parameter {name!r}")

    where = f"{method} {rest}"
    if method == "POST":
        content_type = _header(headers, "Content-Type") or ""
        if not content_type.lower().startswith("application/json"):
            problems.append(f"{where}: a JSON body needs Content-Type: application/json")
        if endpoint.get("body") == "QueryModel" and entity:
            problems.extend(_at_query_body_problems(entity, body, where))
        elif str(endpoint.get("body", "")).endswith("AdjustmentModel"):
            problems.extend(_at_adjustment_problems(body, where, endpoint["body"]))
    return problems
