"""A small chat written as steps, shared by the streams tests (written to a folder per test)."""

from __future__ import annotations

CHAT = {
    "chat_stream.py": """
        from pydantic import BaseModel, Field

        class Message(BaseModel):
            author: str
            text: str = Field(max_length=200_000)
            mood: str | None = None

        async def may_follow(user, room):
            # private-<id> rooms are for their owner only
            return not room.startswith("private-") or room == f"private-{user['id']}"

        config = {"name": "chat", "schema": Message, "authorize": may_follow,
                  "description": "messages by room", "flows": ["chat"]}
    """,
    "post_step.py": """
        from pydantic import BaseModel

        class Post(BaseModel):
            room: str
            id: str
            text: str

        config = {"name": "Post", "type": "api", "path": "/post", "method": "POST", "body": Post,
                  "emits": ["posted"], "flows": ["chat"]}

        async def handler(req, ctx):
            b = req.body
            item = await ctx.streams.chat.set(b.room, b.id, {"author": req.user["id"],
                                                              "text": b.text})
            await ctx.emit({"topic": "posted", "data": {"room": b.room, "id": b.id}})
            return {"status": 201, "body": item}
    """,
    "analyze_step.py": """
        config = {"name": "Analyze", "type": "event", "subscribes": ["posted"], "flows": ["chat"]}

        async def handler(event, ctx):
            chat = ctx.streams.chat
            item = await chat.get(event.data["room"], event.data["id"])
            mood = "happy" if "!" in item.text else "calm"
            await chat.set(event.data["room"], event.data["id"], {**item.model_dump(), "mood": mood})
    """,
    "remove_step.py": """
        config = {"name": "Remove", "type": "api", "path": "/post/{room}/{id}", "method": "DELETE"}

        async def handler(req, ctx):
            await ctx.streams.chat.delete(req.params["room"], req.params["id"])
            return {"status": 204, "body": None}
    """,
    "typing_step.py": """
        config = {"name": "Typing", "type": "api", "path": "/typing/{room}", "method": "POST"}

        async def handler(req, ctx):
            await ctx.streams.chat.send(req.params["room"], {"type": "typing",
                                                             "user": req.user["id"]})
            return {"status": 202, "body": {"ok": True}}
    """,
    "broken_step.py": """
        config = {"name": "Broken", "type": "api", "path": "/broken/{room}", "method": "POST"}

        async def handler(req, ctx):
            await ctx.streams.chat.set(req.params["room"], "never", {"author": "x", "text": "no"})
            await ctx.streams.chat.send(req.params["room"], {"type": "never"})
            raise RuntimeError("after writing to the stream")
    """,
}
