"""Check requests psabill sends to LastPass against ``schemas/lastpass.json``.

The fixture was extracted by hand from LastPass's published pages; each entry
names its source URL and says whether it is an ``assumption`` (not seen in a
published document). This module only reads the fixture.

Every checker returns a list of human-readable problems (empty: the request
fits as far as these checks go); each names the method, the path and what is
wrong, so a failing test says why.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

SCHEMA = Path(__file__).resolve().parent / "schemas" / "lastpass.json"
INT32 = (-2 ** 31, 2 ** 31 - 1)
INT64 = (-2 ** 63, 2 ** 63 - 1)

QueryValue = Union[str, Sequence[str]]


@lru_cache(maxsize=None)
def schema() -> Dict[str, Any]:
    with open(SCHEMA, encoding="utf-8") as handle:
        data: Dict[str, Any] = json.load(handle)
    return data


def _template(path: str) -> "re.Pattern[str]":
    parts = re.split(r"(\{[^}]+\})", path)
    pattern = "".join(f"(?P<{p[1:-1].replace('-', '_')}>[^/]+)" if p.startswith("{") else re.escape(p)
                      for p in parts)
    return re.compile(f"^{pattern}/?$")


def endpoint_for(method: str, path: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, str], List[str]]:
    """(the fixture's endpoint, its path parameters, problems) for a request path under the base path."""
    base = schema()["base_url"]["path"]
    if not path.startswith(base + "/"):
        return None, {}, [f"{method} {path}: not under the base path {base} (base URL {schema()['base_url']['value']})"]
    rest = path[len(base):]
    methods = []
    for endpoint in schema()["endpoints"]:
        match = _template(endpoint["path"]).match(rest)
        if not match:
            continue
        methods.append(endpoint["method"])
        if endpoint["method"] == method:
            params = {name.replace("_", "-"): value for name, value in match.groupdict().items()}
            return endpoint, params, []
    if methods:
        return None, {}, [f"{method} {rest}: the fixture allows only {', '.join(sorted(set(methods)))} there"]
    return None, {}, [f"{method} {rest}: no such path in the fixture"]


def _integer_problem(value: str, rule: Dict[str, Any], name: str) -> Optional[str]:
    if not re.fullmatch(r"-?[0-9]+", value):
        return f"{name}={value!r} is not an integer"
    low, high = INT32 if rule["type"] == "int32" else INT64
    number = int(value)
    low = max(low, rule.get("min", low))
    high = min(high, rule.get("max", high))
    if not low <= number <= high:
        return f"{name}={value} is outside {low}..{high}"
    return None


def _value_problem(value: str, rule: Dict[str, Any], name: str) -> Optional[str]:
    kind = rule["type"]
    if kind in ("int32", "int64"):
        return _integer_problem(value, rule, name)
    if kind == "string":
        return None if value != "" else f"{name} is empty"
    if kind == "date":
        return None if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else f"{name}={value!r} is not an ISO 8601 date"
    if kind == "enum":
        return None if value in rule["values"] else f"{name}={value!r} is not one of {', '.join(rule['values'])}"
    if kind == "csv":
        wrong = [v for v in value.split(",") if v not in rule["values"]]
        return f"{name}={value!r}: {wrong[0]!r} is not one of {', '.join(rule['values'])}" if wrong else None
    if kind == "sort":
        for clause in value.split(","):
            field, _, direction = clause.partition(":")
            if direction not in ("asc", "desc"):
                return f"{name}={value!r}: {clause!r} is not field:asc or field:desc"
            if rule.get("keys") is not None and field not in rule["keys"]:
                return f"{name}={value!r}: {field!r} is not a sort key ({', '.join(rule['keys'])})"
        return None
    return f"{name}: the fixture's type {kind!r} is unknown to the checker"


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def request_problems(method: str, path: str, query: Mapping[str, QueryValue], headers: Mapping[str, str],
                     *, psabill: bool = True) -> List[str]:
    """Problems of one request; ``psabill`` also refuses endpoints psabill is not expected to call."""
    method = method.upper()
    endpoint, path_params, problems = endpoint_for(method, path)
    if endpoint is None:
        return problems
    where = f"{method} {endpoint['path']}"
    if psabill and not endpoint.get("used_by_psabill"):
        problems.append(f"{where}: psabill is not expected to call this endpoint")
    for name, value in path_params.items():
        ptype = endpoint["path_params"].get(name)
        problem = _integer_problem(value, {"type": ptype}, name) if ptype in ("int32", "int64") else None
        if problem:
            problems.append(f"{where}: path parameter {problem}")
    declared = endpoint["query"]
    for name, value in query.items():
        values = [value] if isinstance(value, str) else list(value)
        if name not in declared:
            problems.append(f"{where}: unknown query parameter {name!r}")
            continue
        if len(values) > 1:
            problems.append(f"{where}: query parameter {name!r} is given {len(values)} times")
        for one in values:
            problem = _value_problem(one, declared[name], name)
            if problem:
                problems.append(f"{where}: {problem}")
    for name, rule in declared.items():
        if rule.get("required") and name not in query:
            problems.append(f"{where}: missing required query parameter {name!r}")
    auth = schema()["auth"]
    value = _header(headers, auth["header"])
    if value is None:
        problems.append(f"{where}: missing header {auth['header']}")
    elif not re.match(auth["pattern"], value):
        problems.append(f"{where}: header {auth['header']} is not of the form '{auth['scheme']} <key>'")
    return problems


def log_problems(requests: Iterable[Any]) -> List[str]:
    """Problems of every request in a stand-in's log, plus paging: a request with ``page-token`` must repeat
    every other parameter of a request before it on the same path (the safe reading of the documents)."""
    problems: List[str] = []
    seen: Dict[str, List[Dict[str, str]]] = {}
    for request in requests:
        problems.extend(request_problems(request.method, request.path, request.query, request.headers))
        others = {k: v for k, v in request.query.items() if k != "page-token"}
        if "page-token" in request.query and others not in seen.get(request.path, []):
            problems.append(f"{request.method} {request.path}: page-token sent without the other parameters of "
                            f"the first page ({sorted(others)})")
        seen.setdefault(request.path, []).append(others)
    return problems


def assumptions(method: str, path: str) -> List[str]:
    """What of this request's endpoint the fixture marks as an assumption (for tests that keep it honest)."""
    endpoint, _, _ = endpoint_for(method.upper(), path)
    if endpoint is None:
        return []
    found = [f"{endpoint['method']} {endpoint['path']}"] if endpoint.get("assumption") else []
    found += [f"query {name}" for name, rule in endpoint["query"].items() if rule.get("assumption")]
    if endpoint.get("response_200", {}).get("assumption"):
        found.append("response_200")
    return found


def problem_details_problems(body: Any) -> List[str]:
    """Problems of an error body against the published ProblemDetails fields."""
    fields = schema()["ProblemDetails"]["fields"]
    if not isinstance(body, dict):
        return [f"a ProblemDetails body is an object, not {type(body).__name__}"]
    problems = [f"ProblemDetails has no field {name!r}" for name in body if name not in fields]
    for name, kind in (("title", str), ("detail", str), ("instance", str), ("status", int)):
        if body.get(name) is not None and not isinstance(body[name], kind):
            problems.append(f"ProblemDetails.{name} is {type(body[name]).__name__}")
    errors = body.get("errors")
    if errors is not None:
        if not isinstance(errors, list):
            problems.append("ProblemDetails.errors is not a list")
        else:
            for error in errors:
                if not isinstance(error, dict) or set(error) - {"detail", "pointer"}:
                    problems.append(f"ProblemDetails.errors item {error!r} is not {{detail, pointer}}")
    return problems


def fixture_problems() -> List[str]:
    """Entries of the fixture that do not say where they come from or whether they are assumed."""
    problems: List[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "source" in node and "assumption" not in node:
                problems.append(f"{where}: has a source but no assumption flag")
            if "assumption" in node and not isinstance(node["assumption"], bool):
                problems.append(f"{where}: assumption is not true or false")
            if node.get("assumption") is False and "source" in node and not str(node["source"]).startswith("https://"):
                problems.append(f"{where}: confirmed, but its source is not a URL")
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    data = schema()
    walk({k: v for k, v in data.items() if k != "_source"}, "lastpass.json")
    for endpoint in data["endpoints"]:
        if "source" not in endpoint or "assumption" not in endpoint:
            problems.append(f"endpoint {endpoint.get('path')}: no source or assumption flag")
    return problems
