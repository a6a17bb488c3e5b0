"""A small project for the Workbench's tests, browser tests and screenshots: the sample app's
messages flow, a step that always fails (dead letters), a cron step and a virtual (noop) step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from app.runtime import Clock
from tests.conftest import make_settings
from tests.runtime.conftest import HeaderUser
from tests.support import write_steps

DEMO_STEPS = {
    "messages/send_message_step.py": """
        from pydantic import BaseModel, Field

        class SendMessageIn(BaseModel):
            text: str = Field(min_length=1, max_length=2000)
            room: str = "general"

        class SendMessageOut(BaseModel):
            id: str

        config = {
            "name": "SendMessage",
            "type": "api",
            "path": "/messages",
            "method": "POST",
            "auth": "public",
            "body": SendMessageIn,
            "responses": {202: SendMessageOut},
            "emits": ["message.sent"],
            "flows": ["messages"],
            "description": "Accept a chat message and hand it to the pipeline.",
        }

        async def handler(req, ctx):
            ctx.logger.info("Sending message", text=req.body.text, room=req.body.room)
            event_id = await ctx.emit(
                {"topic": "message.sent", "data": {"text": req.body.text, "room": req.body.room}}
            )
            return {"status": 202, "body": {"id": event_id}}
    """,
    "messages/process_message_step.py": """
        config = {
            "name": "ProcessMessage",
            "type": "event",
            "subscribes": ["message.sent"],
            "flows": ["messages"],
            "retry": {"max_attempts": 3, "delay": 0.05},
        }

        async def handler(event, ctx):
            count = await ctx.state.increment("rooms", event.data["room"])
            await ctx.state.set("messages", event.id, event.data)
            ctx.logger.info("Processing message", room=event.data["room"], count=count)
    """,
    # No `flows` label: the Workbench still groups it with the messages flow by its wiring.
    "messages/analyze_sentiment_step.py": """
        config = {
            "name": "AnalyzeSentiment",
            "type": "event",
            "subscribes": ["message.sent"],
            "emits": ["message.analyzed"],
        }

        async def handler(event, ctx):
            text = event.data["text"].lower()
            label = "positive" if "love" in text or "great" in text else "neutral"
            ctx.logger.info("Sentiment", label=label)
            await ctx.emit({"topic": "message.analyzed", "data": {"label": label}})
    """,
    "messages/notify_moderators_step.py": """
        config = {
            "name": "NotifyModerators",
            "type": "noop",
            "subscribes": ["message.analyzed"],
            "description": "Moderators read analyzed messages in their own tool (documented edge).",
        }
    """,
    "messages/archive_step.py": """
        config = {
            "name": "ArchiveAnalysis",
            "type": "event",
            "subscribes": ["message.analyzed"],
            "flows": ["messages"],
        }

        async def handler(event, ctx):
            await ctx.state.increment("sentiment", event.data["label"])
    """,
    "payments/charge_step.py": """
        from pydantic import BaseModel

        class ChargeIn(BaseModel):
            order_id: str
            amount: int

        config = {
            "name": "ChargeCard",
            "type": "event",
            "subscribes": ["payment.requested"],
            "input": ChargeIn,
            "flows": ["payments"],
            "retry": {"max_attempts": 2, "backoff": "fixed", "delay": 0.05, "jitter": False},
        }

        async def handler(event, ctx):
            if not await ctx.state.get("payments", "gateway_up"):
                raise RuntimeError(f"card gateway unreachable for {event.data.order_id}")
            await ctx.state.set("payments", event.data.order_id, "paid")
            ctx.logger.info("Charged", order_id=event.data.order_id)
    """,
    "payments/request_payment_step.py": """
        config = {
            "name": "RequestPayment",
            "type": "api",
            "path": "/payments/{order_id}",
            "method": "POST",
            "auth": "user",
            "emits": ["payment.requested"],
            "flows": ["payments"],
        }

        async def handler(req, ctx):
            await ctx.emit({"topic": "payment.requested",
                            "data": {"order_id": req.params["order_id"], "amount": 100}})
            return {"status": 202, "body": {"order_id": req.params["order_id"]}}
    """,
    "system/nightly_report_step.py": """
        config = {
            "name": "NightlyReport",
            "type": "cron",
            "schedule": "0 3 * * *",
            "timezone": "Europe/Paris",
            "flows": ["system"],
            "description": "Counts the day's messages.",
        }

        async def handler(_, ctx):
            n = await ctx.state.increment("reports", "runs")
            ctx.logger.info("Nightly report", runs=n)
    """,
}


def demo_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Any:
    steps_dir = write_steps(tmp_path, DEMO_STEPS)
    values: dict[str, Any] = {"steps_dir": steps_dir, "log_level": "INFO"}
    values.update(overrides)
    return make_settings(db_url, **values)


def demo_app(settings: Any, *, role: str = "dev", clock: Clock | None = None) -> FastAPI:
    from app.main import create_app

    app = create_app(settings, role=role, clock=clock)  # type: ignore[arg-type]
    app.add_middleware(HeaderUser)
    return app


@asynccontextmanager
async def demo_client(
    tmp_path: Path, db_url: str, *, role: str = "dev", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The demo app with its lifespan running and an HTTP client on it (no network)."""
    app = demo_app(demo_settings(tmp_path, db_url, **overrides), role=role)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@asynccontextmanager
async def live_server(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port unless given); yields its base URL."""
    import asyncio

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        await task
