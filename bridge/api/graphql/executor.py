"""Builds the executable schema once (SDL + resolvers + scalars) and runs documents with graphql-core."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from graphql import GraphQLSchema, build_schema, graphql
from graphql.language import ast

from bridge.api.graphql import mutations  # noqa: F401  (registers the mutation resolvers)
from bridge.api.graphql.resolvers import MUTATIONS, QUERIES, GqlContext

SDL = Path(__file__).with_name("schema.graphql")


def _serialize_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _serialize_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        # SQLite hands back naive datetimes; everything the gateway stores is UTC
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def _literal(node: ast.ValueNode, _vars: Any = None) -> Any:
    if isinstance(node, ast.IntValueNode):
        return int(node.value)
    if isinstance(node, ast.StringValueNode):
        return node.value
    raise ValueError("unsupported literal")


@cache
def schema() -> GraphQLSchema:
    s = build_schema(SDL.read_text())
    scalars = {
        "JSONString": (_serialize_json, lambda v: v),
        "DateTime": (_serialize_datetime, str),
        "UUID": (str, str),
        "BigInt": (int, int),
    }
    for name, (ser, parse) in scalars.items():
        t = s.type_map[name]
        # graphql-core 3.2 reads serialize/parse_value, 3.3 coerce_output_value/coerce_input_value
        t.serialize = t.coerce_output_value = ser  # type: ignore[attr-defined]
        t.parse_value = t.coerce_input_value = parse  # type: ignore[attr-defined]
        t.parse_literal = _literal  # type: ignore[attr-defined]
    assert s.query_type is not None and s.mutation_type is not None
    for name, fn in QUERIES.items():
        s.query_type.fields[name].resolve = fn
    for name, fn in MUTATIONS.items():
        s.mutation_type.fields[name].resolve = fn
    missing = [n for n in s.query_type.fields if n not in QUERIES] + [
        n for n in s.mutation_type.fields if n not in MUTATIONS]
    if missing:
        raise RuntimeError(f"GraphQL fields without resolver: {missing}")
    return s


async def execute(document: str, variables: dict[str, Any] | None, operation: str | None,
                  context: GqlContext) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    result = await graphql(schema(), document, context_value=context, variable_values=variables,
                           operation_name=operation)
    errors = [{"message": e.message, "path": e.path} for e in result.errors or []]
    return result.data, errors
