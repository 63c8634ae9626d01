"""Rebuild k8s_cronjob.json from a published Kubernetes OpenAPI (swagger 2) document.

Usage: python extract_k8s_cronjob.py SWAGGER_JSON REPO PATH COMMIT [ORIGIN] > k8s_cronjob.json

Keeps io.k8s.api.batch.v1.CronJob and every definition it references,
dropping only what never affects validation: ``description`` texts and
``x-kubernetes-*`` annotations. The fixture's ``_source`` names the input.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Set

ROOT = "io.k8s.api.batch.v1.CronJob"
PREFIX = "#/definitions/"


def _strip(node: Any, in_properties: bool = False) -> Any:
    if isinstance(node, list):
        return [_strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys are field names, not keywords
        return {key: _strip(value) for key, value in node.items()}
    return {
        key: _strip(value, in_properties=key == "properties")
        for key, value in node.items()
        if key != "description" and not key.startswith("x-kubernetes-")
    }


def _refs(node: Any, found: Set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            found.add(ref[len(PREFIX):])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def main() -> None:
    swagger_path, repo, path, commit = sys.argv[1:5]
    origin = sys.argv[5] if len(sys.argv) > 5 else ""
    with open(swagger_path, encoding="utf-8") as handle:
        definitions: Dict[str, Any] = json.load(handle)["definitions"]
    keep: Set[str] = set()
    todo = [ROOT]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        found: Set[str] = set()
        _refs(definitions[name], found)
        todo.extend(found - keep)
    fixture = {
        "_source": {
            "repo": repo,
            "path": path,
            "commit": commit,
            "origin": origin,
            "kept": f"{ROOT} and the {len(keep) - 1} definitions it references",
            "removed": "description texts and x-kubernetes-* annotations (no effect on validation)",
        },
        "$ref": PREFIX + ROOT,
        "definitions": {name: _strip(definitions[name]) for name in sorted(keep)},
    }
    json.dump(fixture, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
