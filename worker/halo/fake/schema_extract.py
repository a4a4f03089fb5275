"""Regenerate `faults_schema.json` and `query_params.json` from Halo's OpenAPI document (a
build step, not run time).

    python -m worker.halo.fake.schema_extract tests/fixtures/halo/openapi-subset.json

The `Faults` extract keeps, for each property of `components.schemas.Faults`, what validation
needs: the JSON type (a `$ref` is an object), the format, nullability and, for arrays, the item
type. The query extract keeps, for each operation, the names of its query parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker.halo.fake.schema import QUERY_FILE, SCHEMA_FILE


def extract_faults_schema(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """Cut the `Faults` schema out of Halo's OpenAPI document.

    Args:
        openapi: the parsed OpenAPI document (`openapi-subset.json`).

    Returns:
        A JSON-ready dict: `{"source", "additionalProperties", "properties": {name: {"type",
        "format", "nullable", "items"}}}` where `type` is a JSON type (`$ref`s become `object`)
        and `items` (arrays only) is the JSON type of the elements. Deterministic: the same
        document always gives the same extract, keys in the document's order.

    Raises:
        KeyError: the document has no `components.schemas.Faults`.
    """
    faults = openapi["components"]["schemas"]["Faults"]
    properties: dict[str, dict[str, Any]] = {}
    for name, spec in faults["properties"].items():
        prop: dict[str, Any] = {
            "type": _json_type(spec),
            "format": spec.get("format"),
            "nullable": bool(spec.get("nullable", False)),
        }
        if prop["type"] == "array":
            prop["items"] = _json_type(spec.get("items", {}))
        properties[name] = prop
    return {
        "source": "openapi-subset.json#/components/schemas/Faults",
        "additionalProperties": bool(faults.get("additionalProperties", True)),
        "properties": properties,
    }


def extract_query_params(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """The query parameter names of every operation of Halo's OpenAPI document.

    Returns:
        A JSON-ready dict: `{"source", "info", "operations": {"GET /api/agent": [names]}}`, the
        path as the server sees it (`/api` + the document's path, lower case, `{id}` kept) and
        the names lower case and sorted (Halo matches both without regard to case).
    """
    operations: dict[str, list[str]] = {}
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            names = {
                str(param["name"]).lower()
                for param in operation.get("parameters", [])
                if param.get("in") == "query"
            }
            operations[f"{method.upper()} /api{path.lower()}"] = sorted(names)
    return {
        "source": "openapi-subset.json#/paths",
        "info": openapi.get("info", {}).get("x-subset-of", ""),
        "operations": dict(sorted(operations.items())),
    }


def dump_query_params(extract: Mapping[str, Any]) -> str:
    """Serialise a query extract as the shipped file is written: one operation per line."""
    lines = [
        f"  {json.dumps(name)}: {json.dumps(names)}"
        for name, names in extract["operations"].items()
    ]
    head = {k: v for k, v in extract.items() if k != "operations"}
    return json.dumps(head)[:-1] + ', "operations": {\n' + ",\n".join(lines) + "\n}}\n"


def _json_type(spec: Mapping[str, Any]) -> str:
    # A $ref in Halo's document always points at an object schema (DateTimeZone, AddressStore...).
    if "$ref" in spec:
        return "object"
    return str(spec.get("type", "object"))


def dump_extract(extract: Mapping[str, Any]) -> str:
    """Serialise an extract as the shipped file is written: one property per line, for diffs."""
    lines = [
        f"  {json.dumps(name)}: {json.dumps(prop)}" for name, prop in extract["properties"].items()
    ]
    head = {k: v for k, v in extract.items() if k != "properties"}
    header = json.dumps(head)[:-1]
    return header + ', "properties": {\n' + ",\n".join(lines) + "\n}}\n"


def main(argv: list[str] | None = None) -> int:
    """Regenerate `faults_schema.json` from an OpenAPI document.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`): the OpenAPI path and, optionally,
            `--out` (default: the file shipped beside this module).

    Returns:
        The process exit status, 0 on success.
    """
    parser = argparse.ArgumentParser(description="Regenerate the fake Halo's Faults extract.")
    parser.add_argument("openapi", type=Path, help="Halo's OpenAPI document (JSON)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name(SCHEMA_FILE))
    parser.add_argument("--query-out", type=Path, default=Path(__file__).with_name(QUERY_FILE))
    args = parser.parse_args(argv)
    openapi = json.loads(args.openapi.read_text(encoding="utf-8"))
    extract = extract_faults_schema(openapi)
    args.out.write_text(dump_extract(extract), encoding="utf-8")
    sys.stdout.write(f"wrote {len(extract['properties'])} properties to {args.out}\n")
    queries = extract_query_params(openapi)
    args.query_out.write_text(dump_query_params(queries), encoding="utf-8")
    sys.stdout.write(f"wrote {len(queries['operations'])} operations to {args.query_out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
