"""Builds the executable schema once (SDL + resolvers + scalars) and runs documents with graphql-core."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from inspect import isawaitable
from pathlib import Path
from typing import Any

from graphql import ExecutionResult, GraphQLError, GraphQLSchema, build_schema, parse, validate
from graphql import execute as graphql_execute
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
    for name, (ser, parse_in) in scalars.items():
        t = s.type_map[name]
        # graphql-core 3.2 reads serialize/parse_value, 3.3 coerce_output_value/coerce_input_value
        t.serialize = t.coerce_output_value = ser  # type: ignore[attr-defined]
        t.parse_value = t.coerce_input_value = parse_in  # type: ignore[attr-defined]
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


# A document's cost is bounded before it runs: each field can cost a database query or a Slurm command
# (500 aliases of scaling_groups once ran 500 scontrol processes)
MAX_DEPTH = 12
MAX_FIELDS = 500
MAX_ROOT_FIELDS = 25


def _cost(node: ast.SelectionSetNode | None, fragments: dict[str, ast.FragmentDefinitionNode], depth: int,
          seen: frozenset[str]) -> tuple[int, int]:
    """(fields, deepest level) of a selection set, fragments expanded (a fragment cycle counts once)."""
    if node is None:
        return 0, depth
    fields, deepest = 0, depth
    for sel in node.selections:
        if isinstance(sel, ast.FieldNode):
            f, d = _cost(sel.selection_set, fragments, depth + 1, seen)
            fields, deepest = fields + 1 + f, max(deepest, d if sel.selection_set else depth + 1)
        elif isinstance(sel, ast.InlineFragmentNode):
            f, d = _cost(sel.selection_set, fragments, depth, seen)
            fields, deepest = fields + f, max(deepest, d)
        elif isinstance(sel, ast.FragmentSpreadNode) and sel.name.value in fragments and sel.name.value not in seen:
            f, d = _cost(fragments[sel.name.value].selection_set, fragments, depth, seen | {sel.name.value})
            fields, deepest = fields + f, max(deepest, d)
    return fields, deepest


def _roots(node: ast.SelectionSetNode, fragments: dict[str, ast.FragmentDefinitionNode],
           seen: frozenset[str] = frozenset()) -> int:
    """Top-level fields of an operation, through fragments spread at the top level."""
    n = 0
    for sel in node.selections:
        if isinstance(sel, ast.FieldNode):
            n += 1
        elif isinstance(sel, ast.InlineFragmentNode):
            n += _roots(sel.selection_set, fragments, seen)
        elif isinstance(sel, ast.FragmentSpreadNode) and sel.name.value in fragments and sel.name.value not in seen:
            n += _roots(fragments[sel.name.value].selection_set, fragments, seen | {sel.name.value})
    return n


def too_costly(doc: ast.DocumentNode) -> str | None:
    """Why a document may not run, or None."""
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, ast.FragmentDefinitionNode)}
    for op in (d for d in doc.definitions if isinstance(d, ast.OperationDefinitionNode)):
        roots = _roots(op.selection_set, fragments)
        fields, depth = _cost(op.selection_set, fragments, 0, frozenset())
        if roots > MAX_ROOT_FIELDS:
            return f"the operation asks for {roots} top-level fields (at most {MAX_ROOT_FIELDS})"
        if fields > MAX_FIELDS:
            return f"the operation asks for {fields} fields (at most {MAX_FIELDS})"
        if depth > MAX_DEPTH:
            return f"the operation nests {depth} levels deep (at most {MAX_DEPTH})"
    return None


async def execute(document: str, variables: dict[str, Any] | None, operation: str | None,
                  context: GqlContext) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    try:
        doc = parse(document)
    except GraphQLError as e:
        return None, [{"message": e.message, "path": None}]
    refused = too_costly(doc)
    if refused:
        return None, [{"message": f"Refused: {refused}", "path": None}]
    invalid = validate(schema(), doc)
    if invalid:
        return None, [{"message": e.message, "path": e.path} for e in invalid]
    result = graphql_execute(schema(), doc, context_value=context, variable_values=variables,
                             operation_name=operation)
    if isawaitable(result):
        result = await result
    assert isinstance(result, ExecutionResult)
    errors = [{"message": e.message, "path": e.path} for e in result.errors or []]
    return result.data, errors
