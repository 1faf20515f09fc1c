"""Issue 12.9: bounded requests. The unauthenticated `/kernel-callback/...` parsed 50 MB before refusing,
and 500 aliases of `scaling_groups` in one GraphQL document ran 500 Slurm commands."""

from __future__ import annotations

import pytest

from tests.unit.api.test_authn import is_problem


async def test_a_large_callback_body_is_refused_before_it_is_read(gw):
    r = await gw.http.post("/kernel-callback/00000000-0000-0000-0000-000000000000", content=b"x" * (1 << 20),
                           headers={"Content-Type": "application/json"})
    is_problem(r, 413, "request-too-large")


async def test_a_chunked_body_is_cut_off_at_the_limit(gw):
    async def chunks():
        for _ in range(64):
            yield b"x" * 65536   # 4 MiB without a Content-Length

    r = await gw.http.post("/kernel-callback/00000000-0000-0000-0000-000000000000", content=chunks())
    is_problem(r, 413, "request-too-large")


async def test_api_bodies_have_a_limit_too_signed_or_not(gw):
    big = {"query": "query { domains { name } }", "pad": "x" * (5 << 20)}
    r = await gw.request("POST", "/admin/gql", "alice", json=big)
    is_problem(r, 413, "request-too-large")
    assert (await gw.request("POST", "/admin/gql", "alice", json={"query": "query { domains { name } }"})
            ).status_code == 200


@pytest.mark.parametrize("document, why", [
    ("query { " + " ".join(f"a{i}: scaling_groups {{ name }}" for i in range(500)) + " }", "top-level fields"),
    ("query { " + " ".join(f"a{i}: domains {{ {'name description is_active ' * 10} }}" for i in range(24)) + " }",
     "fields"),
    ("fragment F on Domain { name } query { domains { ...F ...F } " + " ".join(
        f"d{i}: domains {{ ...F }}" for i in range(30)) + " }", "top-level fields"),
])
async def test_graphql_documents_have_a_cost_limit(gw, document, why):
    calls = []
    real = gw.app.state.slurm.partitions

    async def counted():
        calls.append(1)
        return await real()

    gw.app.state.slurm.partitions = counted
    res = await gw.gql("root", document)
    assert res.get("data") is None and why in res["errors"][0]["message"], res
    assert calls == []   # refused before any resolver ran


async def test_an_ordinary_webui_sized_query_runs(gw):
    q = "query { " + " ".join(f"d{i}: domains {{ name description is_active created_at }}" for i in range(10)) + " }"
    res = await gw.gql("root", q)
    assert "errors" not in res and len(res["data"]) == 10
