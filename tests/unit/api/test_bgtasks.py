"""Background tasks: answered at once with a task id, followed on /events/background-task, told how they
ended even when the listener comes late, and only to the key that started them (or a superadmin)."""

from __future__ import annotations

import asyncio

from bridge.errors import InvalidAPIParameters


def events(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            out.append((lines["event"], lines.get("data", "")))
    return out


async def test_a_listener_sees_progress_then_the_end(gw):
    gate = asyncio.Event()

    async def work(report):
        report(1, 3, "one third")
        await gate.wait()
        report(3, 3, "all")
        return "finished well"
    tid = gw.app.state.bgtasks.start(gw.keys["alice"].access, "test", work)
    path = f"/events/background-task?task_id={tid}"
    listening = asyncio.create_task(gw.request("GET", path, "alice"))
    task = gw.app.state.bgtasks.tasks[tid]
    for _ in range(1000):   # the listener is in before the task goes on
        if task.listeners:
            break
        await asyncio.sleep(0.01)
    gate.set()
    r = await listening
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    assert [e for e, _ in got] == ["bgtask_updated", "bgtask_updated", "bgtask_done", "server_close"]
    assert '"current_progress": 1' in got[0][1] and "finished well" in got[2][1] and tid in got[2][1]


async def test_a_late_listener_learns_the_failure_and_others_see_nothing(gw):
    async def work(report):
        raise InvalidAPIParameters("the copy could not be made")
    tid = gw.app.state.bgtasks.start(gw.keys["alice"].access, "test", work)
    await asyncio.gather(*gw.app.state.bgtasks._running)   # ended before anyone listens
    path = f"/events/background-task?task_id={tid}"
    got = events((await gw.request("GET", path, "alice")).text)
    assert [e for e, _ in got] == ["bgtask_failed", "server_close"] and "could not be made" in got[0][1]
    assert (await gw.request("GET", path, "bob")).status_code == 404
    assert (await gw.request("GET", path, "root")).status_code == 200
    r = await gw.request("GET", "/events/background-task?task_id=nope", "alice")
    assert r.status_code == 404 and r.json()["type"].endswith("/object-not-found")


async def test_rescan_images_is_a_background_task(gw):
    r = await gw.gql("root", "mutation { rescan_images { ok msg task_id } }")
    out = r["data"]["rescan_images"]
    assert out["ok"] and out["task_id"]
    got = events((await gw.request("GET", f"/events/background-task?task_id={out['task_id']}", "root")).text)
    assert got[-2][0] == "bgtask_done" and "rescanned 0 image(s)" in got[-2][1]
    r = await gw.gql("alice", "mutation { rescan_images { ok msg task_id } }")
    assert r["data"]["rescan_images"] is None and "Forbidden" in r["errors"][0]["message"]


async def test_image_aliases_and_forgetting_through_graphql(gw):
    from bridge.adapters.db.tables import ImageRow

    async with gw.app.state.db.unit_of_work() as s:
        s.add(ImageRow(name="python:3.13", path="/srv/images/python.sif", aliases=[]))
    r = await gw.gql("root", 'mutation { alias_image(alias: "py", target: "python:3.13") { ok msg } }')
    assert r["data"]["alias_image"]["ok"], r
    r = await gw.gql("root", "query { images { name tag aliases } }")
    assert {"name": "python", "tag": "3.13", "aliases": ["py"]} in r["data"]["images"]
    r = await gw.gql("root", 'mutation { dealias_image(alias: "py") { ok msg } }')
    assert r["data"]["dealias_image"]["ok"]
    r = await gw.gql("root", 'mutation { dealias_image(alias: "py") { ok msg } }')
    assert r["data"]["dealias_image"] == {"ok": False, "msg": "no image alias py"}
    r = await gw.gql("alice", 'mutation { forget_image(reference: "python:3.13") { ok msg } }')
    assert r["data"]["forget_image"] is None
    r = await gw.gql("root", 'mutation { forget_image(reference: "python:3.13", architecture: "x86_64") { ok msg } }')
    assert r["data"]["forget_image"]["ok"]
    assert (await gw.gql("root", "query { images { name } }"))["data"]["images"] == []
