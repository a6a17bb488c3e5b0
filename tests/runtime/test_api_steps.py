"""API steps over HTTP: validation, OpenAPI, auth levels, middleware, replies, errors, traces."""

from __future__ import annotations

from pathlib import Path

from tests.runtime.conftest import step_app

MODELS = """
from pydantic import BaseModel, Field, EmailStr

class CreateIn(BaseModel):
    email: str = Field(pattern=r"^[^@]+@[^@]+$")
    name: str = Field(min_length=2, max_length=100)
    age: int = Field(ge=18)

class CreateOut(BaseModel):
    id: str
    name: str

class Page(BaseModel):
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0)
"""

STEPS = {
    "models.py": MODELS.replace(", EmailStr", ""),
    "create_step.py": """
        from app.runtime import AppError
        from .models import CreateIn, CreateOut
        config = {"name": "Create", "type": "api", "path": "/things", "method": "POST",
                  "body": CreateIn, "responses": {201: CreateOut}, "auth": "public"}
        async def handler(req, ctx):
            if req.body.name == "taken":
                raise AppError("conflict", 409)
            return {"status": 201, "body": {"id": "t1", "name": req.body.name, "secret": "hidden"},
                    "headers": {"Location": "/things/t1"}}
    """,
    "list_step.py": """
        from .models import Page
        config = {"name": "List", "type": "api", "path": "/things", "method": "GET",
                  "query": Page, "auth": "user"}
        async def handler(req, ctx):
            return {"status": 200, "body": {"limit": req.query.limit, "offset": req.query.offset,
                                            "user": req.user["id"]}}
    """,
    "get_step.py": """
        from app.runtime import NotFound
        config = {"name": "Get", "type": "api", "path": "/things/{thing_id}", "method": "GET",
                  "auth": "admin"}
        def handler(req, ctx):  # a plain def runs in a thread
            if req.params["thing_id"] == "missing":
                raise NotFound()
            return {"status": 200, "body": {"id": req.params["thing_id"]}}
    """,
    "raw_step.py": """
        config = {"name": "Raw", "type": "api", "path": "/raw", "method": "POST", "auth": "public"}
        async def handler(req, ctx):
            return {"status": 200, "body": {"got": req.body, "trace_id": ctx.trace_id}}
    """,
    "boom_step.py": """
        config = {"name": "Boom", "type": "api", "path": "/boom", "method": "GET", "auth": "public"}
        async def handler(req, ctx):
            raise RuntimeError("database password is hunter2")
    """,
    "wrapped_step.py": """
        async def add_header(req, ctx, next):
            result = await next()
            result["headers"] = {"X-Wrapped": "yes"}
            return result
        async def deny(req, ctx, next):
            if req.query.get("deny"):
                return {"status": 418, "body": {"denied": True}}
            return await next()
        config = {"name": "Wrapped", "type": "api", "path": "/wrapped", "method": "GET",
                  "auth": "public", "middleware": [deny, add_header]}
        async def handler(req, ctx):
            return {"status": 200, "body": {"ok": True}}
    """,
}


async def test_a_valid_body_reaches_the_handler_and_the_reply_is_shaped(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        response = await client.post("/things", json={"email": "a@b.co", "name": "Ann", "age": 30})
    assert response.status_code == 201
    # the declared response model shapes the body: undeclared fields never leak
    assert response.json() == {"id": "t1", "name": "Ann"}
    assert response.headers["location"] == "/things/t1"


async def test_an_invalid_body_is_a_400_naming_each_field(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        response = await client.post("/things", json={"email": "nope", "name": "A", "age": 17})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_failed"
    assert body["error"]
    assert body["trace_id"] == response.headers["x-trace-id"]
    assert {d["field"] for d in body["details"]} == {"email", "name", "age"}


async def test_malformed_json_and_a_missing_body_are_400_not_500(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        broken = await client.post(
            "/things", content=b'{"email": ', headers={"content-type": "application/json"}
        )
        empty = await client.post("/things")
        raw_broken = await client.post(
            "/raw", content=b"{nope", headers={"content-type": "application/json"}
        )
    for response in (broken, empty, raw_broken):
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "validation_failed"


async def test_a_query_model_is_validated_and_documented(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        ok = await client.get("/things?limit=5", headers={"X-Test-User": "u1"})
        bad = await client.get("/things?limit=500", headers={"X-Test-User": "u1"})
        spec = (await client.get("/openapi.json")).json()
    assert ok.json() == {"limit": 5, "offset": 0, "user": "u1"}
    assert bad.status_code == 400
    assert bad.json()["details"][0]["field"] == "limit"
    params = {p["name"] for p in spec["paths"]["/things"]["get"]["parameters"]}
    assert params == {"limit", "offset"}


async def test_openapi_documents_bodies_responses_and_security(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    post = spec["paths"]["/things"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CreateIn"
    )
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CreateOut"
    )
    assert "security" not in post  # public
    assert spec["paths"]["/things"]["get"]["security"] == [{"bearerAuth": []}]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert docs.status_code == 200


async def test_auth_levels_public_user_admin(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        anonymous = await client.get("/things")
        as_user = await client.get("/things/7", headers={"X-Test-User": "u1:user"})
        as_admin = await client.get("/things/7", headers={"X-Test-User": "a1:admin"})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    assert as_user.status_code == 403
    assert as_user.json()["code"] == "forbidden"
    assert as_admin.json() == {"id": "7"}


async def test_app_errors_and_404_405_use_the_envelope(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        conflict = await client.post(
            "/things", json={"email": "a@b.co", "name": "taken", "age": 30}
        )
        missing = await client.get("/things/missing", headers={"X-Test-User": "a:admin"})
        no_route = await client.get("/nowhere")
        wrong_method = await client.delete("/raw")
    assert (conflict.status_code, conflict.json()["code"]) == (409, "conflict")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (no_route.status_code, no_route.json()["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")
    for response in (conflict, missing, no_route, wrong_method):
        assert set(response.json()) == {"error", "code", "details", "trace_id"}
        assert response.json()["trace_id"] == response.headers["x-trace-id"]


async def test_an_unhandled_exception_is_a_500_envelope_that_leaks_nothing(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        response = await client.get("/boom", headers={"X-Trace-Id": "trace-boom-1234"})
    assert response.status_code == 500
    assert response.json()["code"] == "internal"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert response.json()["trace_id"] == "trace-boom-1234"
    assert response.headers["x-trace-id"] == "trace-boom-1234"


async def test_step_middleware_wraps_the_handler_in_order(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        passed = await client.get("/wrapped")
        denied = await client.get("/wrapped?deny=1")
    assert passed.json() == {"ok": True}
    assert passed.headers["x-wrapped"] == "yes"
    assert denied.status_code == 418


async def test_trace_ids_are_taken_when_valid_else_made(tmp_path: Path, db_url: str) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with step_app(tmp_path, db_url, STEPS) as client:
        given = await client.post("/raw", json={}, headers={"X-Trace-Id": "abc-123-def"})
        invalid = await client.post("/raw", json={}, headers={"X-Trace-Id": "bad id; drop"})
        w3c = await client.post("/raw", json={}, headers={"traceparent": traceparent})
    assert given.json()["trace_id"] == "abc-123-def" == given.headers["x-trace-id"]
    assert invalid.headers["x-trace-id"] != "bad id; drop"
    assert len(invalid.headers["x-trace-id"]) == 32
    assert w3c.json()["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_openapi_documents_the_envelope_not_fastapis_422(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        spec = (await client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            assert responses["default"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorEnvelope"
            )
    post = spec["paths"]["/things"]["post"]["responses"]
    assert post["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert set(spec["components"]["schemas"]["ErrorEnvelope"]["required"]) >= {"error", "code"}
