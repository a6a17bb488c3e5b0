"""The route index (app/routing.py) answers exactly as FastAPI's router would, only sooner."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Match

from app.routing import RouteIndex
from tests.accounts import assert_envelope
from tests.runtime.conftest import step_app

STEPS = {
    "a_item_step.py": """
        config = {"name": "ItemById", "type": "api", "path": "/items/{item_id}", "method": "GET",
                  "auth": "public"}
        async def handler(req, ctx):
            return {"status": 200, "body": {"by": "id", "id": req.params["item_id"]}}
    """,
    "b_special_step.py": """
        config = {"name": "Special", "type": "api", "path": "/items/special", "method": "GET",
                  "auth": "public"}
        async def handler(req, ctx):
            return {"status": 200, "body": {"by": "special"}}
    """,
    "c_plain_step.py": """
        config = {"name": "Plain", "type": "api", "path": "/plain", "method": "GET",
                  "auth": "public", "responses": {200: dict}}
        async def handler(req, ctx):
            return {"status": 200, "body": {"plain": True}, "headers": {"Vary": "Accept"}}
    """,
    "d_plain_post_step.py": """
        config = {"name": "PlainPost", "type": "api", "path": "/plain", "method": "POST",
                  "auth": "user"}
        async def handler(req, ctx):
            return {"status": 201, "body": {"got": req.body}}
    """,
}


def _index(client: object) -> RouteIndex:
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(index, RouteIndex)
    return index


def _router_choice(routes: list[object], path: str, method: str) -> object:
    probe = {"type": "http", "path": path, "root_path": "", "method": method}
    for route in routes:
        if route.matches(probe)[0] is Match.FULL:  # type: ignore[attr-defined]
            return route
    return None


async def test_a_fixed_path_after_a_parameter_route_that_shadows_it_stays_with_the_router(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        special = await client.get("/items/special")
        by_id = await client.get("/items/7")
        plain = await client.get("/plain")
        index = _index(client)
    # FastAPI takes the first route that matches: the parameter route, declared first.
    assert special.json() == {"by": "id", "id": "special"}
    assert by_id.json() == {"by": "id", "id": "7"}
    assert plain.json() == {"plain": True}
    assert ("/items/special", "GET") not in index.table
    assert ("/plain", "GET") in index.table and ("/plain", "POST") in index.table


async def test_every_indexed_pair_is_the_route_the_router_would_pick(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        await client.get("/plain")  # the index is built on the first request
        index = _index(client)
        routes = client.app.router.routes  # type: ignore[attr-defined]
    assert ("/plain", "GET") in index.table and ("/openapi.json", "GET") in index.table
    for (path, method), route in index.table.items():
        assert _router_choice(routes, path, method) is route, (path, method)


async def test_wrong_methods_slashes_and_unknown_paths_answer_as_before(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        wrong_method = await client.delete("/plain")
        slash = await client.get("/plain/", follow_redirects=False)
        unknown = await client.get("/nowhere")
        unauthorized = await client.post("/plain", json={"a": 1})
        signed_in = await client.post("/plain", json={"a": 1}, headers={"X-Test-User": "u1"})
    assert_envelope(wrong_method, 405, "method_not_allowed")
    assert slash.status_code == 307 and slash.headers["location"].endswith("/plain")
    assert_envelope(unknown, 404, "not_found")
    assert_envelope(unauthorized, 401, "unauthorized")
    assert signed_in.status_code == 201 and signed_in.json() == {"got": {"a": 1}}


async def test_a_route_added_after_the_first_request_is_found(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        assert (await client.get("/plain")).status_code == 200
        app = client.app  # type: ignore[attr-defined]

        async def late() -> dict[str, str]:
            return {"late": "yes"}

        app.router.add_api_route("/late", late, methods=["GET"])
        answer = await client.get("/late")
    assert answer.status_code == 200 and answer.json() == {"late": "yes"}


async def test_answers_without_an_origin_vary_on_origin_and_keep_their_own_vary(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        plain = await client.get("/plain")
        by_id = await client.get("/items/7")
        with_origin = await client.get("/plain", headers={"Origin": "http://localhost:3000"})
    assert plain.headers.get_list("vary") == ["Accept, Origin"]
    assert by_id.headers.get_list("vary") == ["Origin"]
    assert with_origin.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "Origin" in with_origin.headers["vary"] and "Accept" in with_origin.headers["vary"]
