"""Documents where `message.analyzed` goes: to the browsers following the room."""

config = {
    "name": "NotifyClients",
    "type": "noop",
    "subscribes": ["message.analyzed"],
    "flows": ["messages"],
    "description": "Clients following the room on the `chat` stream (WebSocket `/streams`, SSE "
    "`/streams/chat/<room>`) see the sentiment arrive: AnalyzeSentiment sets it on the stream "
    "in the same transaction that emits `message.analyzed`. Subscribe a real step here to act "
    "on it (alerts on negative messages, say).",
}
