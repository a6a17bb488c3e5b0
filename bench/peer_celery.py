"""The Celery side of `bench/peers.py`: one task doing one INSERT (its emit -> start latency).

Configured from the environment by `bench/peers.py`, which starts the workers as
`celery -A bench.peer_celery worker --pool solo ...` and produces from its own process.
"""

from __future__ import annotations

import os
import time

import psycopg
from celery import Celery

BROKER = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/7")
QUEUE = os.environ.get("PEERS_QUEUE", "peers_bench")

app = Celery("peers_bench", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,  # no result backend: the producer polls the table instead
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=int(os.environ.get("PEERS_CELERY_PREFETCH", "4")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_conn: psycopg.Connection | None = None


def _db() -> psycopg.Connection:
    global _conn
    if _conn is None:
        _conn = psycopg.connect(os.environ["PEERS_PG_URL"], autocommit=True)
    return _conn


@app.task(name="peers.record")
def record(t: float) -> None:
    latency_ms = (time.time() - t) * 1000
    _db().execute(
        "INSERT INTO peers_jobs (latency_ms, pid) VALUES (%s, %s)", (latency_ms, os.getpid())
    )
