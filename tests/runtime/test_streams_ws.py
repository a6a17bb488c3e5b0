"""Streams over a real WebSocket: snapshot then live changes, the unit of work, auth, protocol."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.runtime.live import live_app, recv, send_json, subscribe
from tests.runtime.stream_steps import CHAT

U2 = {"X-Test-User": "u2"}


async def test_a_subscriber_sees_a_post_by_another_user_within_a_second_then_its_analysis(
    tmp_path: Path, any_db_url: str
) -> None:
    async with (
        live_app(tmp_path, any_db_url, CHAT) as live,
        live.client() as http,
        live.connect("u1") as ws,
    ):
        snapshot = await subscribe(ws, "chat", "lobby")
        assert snapshot == [
            {
                "type": "subscribed",
                "stream": "chat",
                "group_id": "lobby",
                "version": 0,
                "items": 0,
            }
        ]
        started = time.monotonic()
        posted = await http.post(
            "/post", json={"room": "lobby", "id": "m1", "text": "hi!"}, headers=U2
        )
        assert posted.status_code == 201, posted.text
        created = await recv(ws, timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert created == {
            "stream": "chat",
            "group_id": "lobby",
            "id": "m1",
            "event": "create",
            "data": {"author": "u2", "text": "hi!", "mood": None},
            "version": 1,
        }
        analyzed = await recv(ws, timeout=5.0)
        assert analyzed["event"] == "update"
        assert analyzed["data"] == {"author": "u2", "text": "hi!", "mood": "happy"}
        assert analyzed["version"] == 2


async def test_on_subscribe_the_current_items_come_first_then_every_change(
    tmp_path: Path, db_url: str
) -> None:
    async with live_app(tmp_path, db_url, CHAT) as live, live.client() as http:
        for n in (1, 2, 3):
            await http.post("/post", json={"room": "r", "id": f"m{n}", "text": f"t{n}"}, headers=U2)
        await http.delete("/post/r/m2", headers=U2)
        chat = live.runtime.stream("chat")

        async def analyzed() -> bool:
            items = await chat.get_group("r")
            return all(i.mood for i in items.values())

        from tests.support import eventually

        await eventually(analyzed)
        async with live.connect() as ws:
            frames = await subscribe(ws, "chat", "r")
            assert [(f.get("id"), f.get("event")) for f in frames[:-1]] == [
                ("m1", "create"),
                ("m3", "create"),
            ]
            assert frames[-1]["type"] == "subscribed"
            assert frames[-1]["items"] == 2
            versions = [f["version"] for f in frames[:-1]]
            assert versions == sorted(versions)
            assert frames[-1]["version"] == 7  # 3 sets, 3 analyses, 1 delete
            await http.delete("/post/r/m1", headers=U2)
            deleted = await recv(ws)
            assert deleted == {
                "stream": "chat",
                "group_id": "r",
                "id": "m1",
                "event": "delete",
                "data": None,
                "version": 8,
            }
            await http.post("/typing/r", headers=U2)
            typing = await recv(ws)
            assert typing == {
                "stream": "chat",
                "group_id": "r",
                "id": None,
                "event": "custom",
                "data": {"type": "typing", "user": "u2"},
                "version": None,
            }
        # ephemeral events are not stored; deletes are gone from the group
        assert sorted(await chat.get_group("r")) == ["m3"]


async def test_a_handler_that_raises_stores_and_broadcasts_nothing(
    tmp_path: Path, db_url: str
) -> None:
    async with (
        live_app(tmp_path, db_url, CHAT) as live,
        live.client() as http,
        live.connect() as ws,
    ):
        await subscribe(ws, "chat", "r")
        failed = await http.post("/broken/r", headers=U2)
        assert failed.status_code == 500
        # a later change arrives first: nothing of the failed step came before it
        await http.post("/typing/r", headers=U2)
        frame = await recv(ws)
        assert frame["event"] == "custom" and frame["data"]["type"] == "typing"
        assert await live.runtime.stream("chat").get("r", "never") is None


async def test_several_groups_on_one_connection_and_unsubscribe(
    tmp_path: Path, db_url: str
) -> None:
    async with (
        live_app(tmp_path, db_url, CHAT) as live,
        live.client() as http,
        live.connect() as ws,
    ):
        await subscribe(ws, "chat", "a")
        await subscribe(ws, "chat", "b")
        await http.post("/typing/a", headers=U2)
        await http.post("/typing/b", headers=U2)
        got = {(await recv(ws))["group_id"], (await recv(ws))["group_id"]}
        assert got == {"a", "b"}
        await send_json(ws, {"unsubscribe": {"stream": "chat", "group_id": "a"}})
        assert await recv(ws) == {"type": "unsubscribed", "stream": "chat", "group_id": "a"}
        await http.post("/typing/a", headers=U2)
        await http.post("/typing/b", headers=U2)
        assert (await recv(ws))["group_id"] == "b"
        await send_json(ws, {"ping": 42})
        assert await recv(ws) == {"type": "pong", "data": 42}


async def test_resubscribing_with_since_sends_only_what_changed_deletes_included(
    tmp_path: Path, db_url: str
) -> None:
    async with live_app(tmp_path, db_url, CHAT) as live:
        chat = live.runtime.stream("chat")
        await chat.set("r", "a", {"author": "x", "text": "a"})
        await chat.set("r", "b", {"author": "x", "text": "b"})
        async with live.connect() as ws:
            seen = (await subscribe(ws, "chat", "r"))[-1]["version"]
        assert seen == 2
        await chat.set("r", "b", {"author": "x", "text": "b2"})
        await chat.delete("r", "a")
        await chat.set("r", "c", {"author": "x", "text": "c"})
        async with live.connect() as ws:
            frames = await subscribe(ws, "chat", "r", since=seen)
        assert [(f.get("id"), f.get("event"), f.get("version")) for f in frames] == [
            ("b", "update", 3),
            ("a", "delete", 4),
            ("c", "update", 5),
            (None, None, 5),
        ]
        async with live.connect() as ws:  # a version from another database: start over
            frames = await subscribe(ws, "chat", "r", since=99)
        assert frames[0] == {"type": "reset", "stream": "chat", "group_id": "r"}
        assert [f.get("id") for f in frames[1:-1]] == ["b", "c"]


async def test_the_runtime_api_writes_outside_steps_and_sync_handlers_write_too(
    tmp_path: Path, db_url: str
) -> None:
    files = {
        **CHAT,
        "sync_step.py": """
            config = {"name": "SyncPost", "type": "api", "path": "/sync/{room}", "method": "POST"}
            def handler(req, ctx):
                item = ctx.streams.chat.set(req.params["room"], "s", {"author": "sync",
                                                                       "text": "from a thread"})
                return {"status": 200, "body": {"text": item.text,
                                                "seen": ctx.streams["chat"].get(req.params["room"], "s").text}}
        """,
    }
    async with (
        live_app(tmp_path, db_url, files) as live,
        live.client() as http,
        live.connect() as ws,
    ):
        await subscribe(ws, "chat", "r")
        stored = await live.runtime.stream("chat").set("r", "x", {"author": "cli", "text": "t"})
        assert stored.text == "t"
        assert (await recv(ws))["id"] == "x"
        reply = await http.post("/sync/r", headers=U2)
        assert reply.json() == {"text": "from a thread", "seen": "from a thread"}
        assert (await recv(ws))["data"]["author"] == "sync"
        groups = await live.runtime.stream("chat").groups()
        assert [(g["group_id"], g["items"], g["version"]) for g in groups] == [("r", 2, 2)]


# -- auth and the protocol --------------------------------------------------------------------


async def test_a_connection_without_a_user_gets_an_error_frame_then_a_close(
    tmp_path: Path, db_url: str
) -> None:
    async with live_app(tmp_path, db_url, CHAT) as live, live.connect(None) as ws:
        await send_json(ws, {"subscribe": {"stream": "chat", "group_id": "r"}})
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] == "unauthorized"
        assert "auth" in frame["error"]
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "unauthorized")
        async with live.connect(None) as ws:  # a bad token in the first message
            await send_json(ws, {"auth": {"token": "bad token"}})
            assert (await recv(ws))["code"] == "unauthorized"
            with pytest.raises(ConnectionClosed):
                await recv(ws)
        live.runtime.set_stream_authenticator(None)  # the default: no first-message sign-in
        async with live.connect(None) as ws:
            frame = await recv(ws)
            assert frame["code"] == "unauthorized"
            with pytest.raises(ConnectionClosed):
                await recv(ws)


async def test_a_token_signs_in_by_query_parameter_or_first_message(
    tmp_path: Path, db_url: str
) -> None:
    async with live_app(tmp_path, db_url, CHAT) as live, live.connect(None, path="?token=u7") as ws:
        assert (await subscribe(ws, "chat", "private-u7"))[-1]["type"] == "subscribed"
        async with live.connect(None) as ws:
            await send_json(ws, {"auth": {"token": "u8"}})
            assert await recv(ws) == {"type": "authenticated"}
            assert (await subscribe(ws, "chat", "private-u8"))[-1]["type"] == "subscribed"
            await send_json(ws, {"auth": {"token": "u8"}})
            assert (await recv(ws))["code"] == "already_signed_in"


async def test_the_authorize_hook_refuses_with_an_error_frame_and_the_connection_stays(
    tmp_path: Path, db_url: str
) -> None:
    async with (
        live_app(tmp_path, db_url, CHAT) as live,
        live.client() as http,
        live.connect("u1") as ws,
    ):
        await send_json(ws, {"subscribe": {"stream": "chat", "group_id": "private-u2"}})
        assert await recv(ws) == {
            "type": "error",
            "code": "forbidden",
            "error": "not allowed to follow chat/private-u2",
            "stream": "chat",
            "group_id": "private-u2",
        }
        await subscribe(ws, "chat", "private-u1")
        await http.post("/typing/private-u1", headers=U2)
        assert (await recv(ws))["event"] == "custom"


@pytest.mark.parametrize(
    ("frame", "code", "names"),
    [
        ("not json", "malformed", "not JSON"),
        ("[1, 2]", "malformed", "JSON object"),
        ('{"subscribe": {"stream": "chat"}}', "malformed", "subscribe.group_id"),
        ('{"subscribe": {"stream": "chat", "group_id": ""}}', "malformed", "subscribe.group_id"),
        ('{"subscribe": {"group_id": "r"}}', "malformed", "subscribe.stream"),
        ('{"subscribe": "chat"}', "malformed", "subscribe takes an object"),
        (
            '{"subscribe": {"stream": "chat", "group_id": "r", "since": -1}}',
            "malformed",
            "subscribe.since",
        ),
        ('{"subscribe": {"stream": "chat", "group_id": "r", "room": 1}}', "malformed", "room"),
        ('{"subscribe": {"stream": "nope", "group_id": "r"}}', "unknown_stream", "'nope'"),
        ('{"subscribe": {}, "unsubscribe": {}}', "malformed", "exactly one"),
        ('{"hello": 1}', "malformed", "exactly one"),
        (
            '{"unsubscribe": {"stream": "chat", "group_id": "zz"}}',
            "not_subscribed",
            "not subscribed",
        ),
        (b"\x00binary", "malformed", "binary"),
    ],
)
async def test_malformed_frames_get_an_error_frame_naming_the_problem(
    tmp_path: Path, db_url: str, frame: str | bytes, code: str, names: str
) -> None:
    async with live_app(tmp_path, db_url, CHAT) as live, live.connect() as ws:
        await ws.send(frame)
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == code, error
        assert names in error["error"]
        # the connection is still usable
        assert (await subscribe(ws, "chat", "r"))[-1]["type"] == "subscribed"
        await send_json(ws, {"subscribe": {"stream": "chat", "group_id": "r"}})
        assert (await recv(ws))["code"] == "already_subscribed"


async def test_a_user_may_hold_only_so_many_connections(tmp_path: Path, db_url: str) -> None:
    async with live_app(tmp_path, db_url, CHAT, stream_max_connections_per_user=2) as live:
        async with live.connect("u1") as one, live.connect("u1") as two:
            await subscribe(one, "chat", "r")
            await subscribe(two, "chat", "r")
            async with live.connect("u1") as three:
                refused = await recv(three)
                assert refused["code"] == "too_many_connections"
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(three)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
            async with live.connect("u2") as other:  # another user is not counted
                await subscribe(other, "chat", "r")
        async with live.connect("u1") as again:  # closed connections free their place
            await subscribe(again, "chat", "r")


async def test_a_quiet_connection_gets_heartbeats(tmp_path: Path, db_url: str) -> None:
    async with (
        live_app(tmp_path, db_url, CHAT, stream_heartbeat_seconds=0.1) as live,
        live.connect() as ws,
    ):
        await subscribe(ws, "chat", "r")
        async with asyncio.timeout(3):
            assert (await ws.recv()) == '{"type":"ping"}'


async def test_a_request_the_database_cannot_serve_fails_alone(tmp_path: Path, db_url: str) -> None:
    from sqlalchemy import text

    async with live_app(tmp_path, db_url, CHAT) as live, live.connect() as ws:
        await subscribe(ws, "chat", "a")
        async with live.runtime.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE stepwise_stream_items RENAME TO gone"))
        try:
            await send_json(ws, {"subscribe": {"stream": "chat", "group_id": "b"}})
            assert (await recv(ws))["code"] == "unavailable"
            await send_json(ws, {"ping": 1})
            assert await recv(ws) == {"type": "pong", "data": 1}
        finally:
            async with live.runtime.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE gone RENAME TO stepwise_stream_items"))
