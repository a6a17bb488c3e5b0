"""`python -m app ...` (also `stepwise ...`): run, migrate, inspect and operate a project."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

from app.runtime import EmitError, StepConfigError
from app.settings import Settings, get_settings


def _settings() -> Settings:
    return get_settings()


# -- serving ------------------------------------------------------------------------------------


def _exit_0_on_sigterm() -> None:
    """SIGTERM ends the server with status 0 once its graceful shutdown is done.

    uvicorn shuts down on SIGTERM, then raises the signal again for the handler that was in
    place before it; with the default one the process dies "killed by SIGTERM" (143) after a
    clean stop, which platforms report as a failure. A SIGTERM before uvicorn takes over exits
    at once: nothing is running yet.
    """

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)


def _reload_options(enabled: bool) -> dict[str, Any]:
    """Restart when a step, the app or a catalogue changes (JS/TS steps included)."""
    if not enabled:
        return {"reload": False}
    return {
        "reload": True,
        "reload_dirs": ["app", "steps", "locales"],
        "reload_includes": ["*.py", "*.po", "*.js", "*.ts", "*.mjs"],
    }


def cmd_dev(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    _migrate(settings)
    _exit_0_on_sigterm()
    uvicorn.run(
        "app.main:create_dev_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        **_reload_options(not args.no_reload),
        log_level="warning",
        proxy_headers=False,  # X-Forwarded-For is weighed by the app (TRUSTED_PROXIES)
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    _exit_0_on_sigterm()
    uvicorn.run(
        "app.main:create_api_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="warning",
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    asyncio.run(_run_worker(_settings(), args.concurrency))
    return 0


async def _run_worker(settings: Settings, concurrency: int | None) -> None:
    from app.main import build_runtime
    from app.runtime import configure_logging, get_logger

    configure_logging(settings.log_level, settings.resolved_log_format)
    from app.workbench import install_otel

    runtime = build_runtime(settings)
    tracer_provider = install_otel(runtime, settings)
    log = get_logger(component="worker-process")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start(worker=True, concurrency=concurrency)
    # As the API process does (app/main.py): what imports and start-up built lives as long as
    # the process, so the collector's full passes leave it out (a pass over it stopped every
    # handler for ~50 ms, the slowest deliveries' wait in bench/events.py).
    gc.freeze()
    log.info("worker process ready", steps=[s.name for s in runtime.registry.queued_steps])
    await stop.wait()
    log.info("stopping: finishing running handlers", grace=settings.shutdown_grace_seconds)
    await runtime.stop()
    if tracer_provider is not None:
        tracer_provider.shutdown()
    await runtime.engine.dispose()


# -- database -----------------------------------------------------------------------------------


def _migrate(settings: Settings) -> None:
    from app.db import migrate

    migrate(settings.database_url)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    _migrate(settings)
    print(f"migrations applied ({_backend(settings)})")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from app.seed import seed_sync

    settings = _settings()
    inserted = seed_sync(settings.database_url, settings.steps_dir)
    rows = ", ".join(f"{feature}: {n}" for feature, n in inserted.items()) or "no seeds"
    print(f"seed rows inserted ({rows})")
    return 0


def _backend(settings: Settings) -> str:
    return "postgres" if settings.database_url.startswith("postgres") else "sqlite"


def cmd_create_admin(args: argparse.Namespace) -> int:
    from app.accounts import NoUsersTableError, make_admin, normalize_email
    from app.db import create_engine
    from app.models import load_feature_models
    from app.security import passwords

    settings = _settings()
    try:
        email = normalize_email(args.email)
    except ValueError as exc:
        print(f"error: {args.email!r} is not a valid email address: {exc}", file=sys.stderr)
        return 2
    password = _read_password(args.password_stdin)
    if password is None:
        return 2
    load_feature_models(settings.steps_dir)

    async def run() -> str:
        engine = create_engine(settings)
        try:
            return await make_admin(engine, email, password, passwords(settings))
        finally:
            await engine.dispose()

    try:
        outcome = asyncio.run(run())
    except NoUsersTableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{email}: admin {'created' if outcome == 'created' else 'promoted, password reset'}")
    return 0


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return None
    if len(password) < 8:
        print("error: the password must be at least 8 characters long", file=sys.stderr)
        return None
    return password


# -- inspection ---------------------------------------------------------------------------------


def cmd_graph(args: argparse.Namespace) -> int:
    from app.runtime._graph import graph_data, graph_mermaid, graph_text
    from app.runtime._steps import discover

    registry = discover(_settings().steps_dir)
    if args.format == "json":
        print(json.dumps(graph_data(registry), indent=2, default=str))
    elif args.format == "mermaid":
        print(graph_mermaid(registry))
    else:
        print(graph_text(registry))
    for warning in registry.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 0


# -- operating ----------------------------------------------------------------------------------


async def _with_runtime(fn: Any) -> Any:
    from app.main import build_runtime

    runtime = build_runtime(_settings())
    try:
        return await fn(runtime)
    finally:
        await runtime.engine.dispose()


def cmd_emit(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        print(f"error: DATA is not JSON: {exc}", file=sys.stderr)
        return 2

    async def emit(runtime: Any) -> str:
        event_id: str = await runtime.emit(
            args.topic, data, delay=args.delay, message_group_id=args.group
        )
        return event_id

    try:
        event_id = asyncio.run(_with_runtime(emit))
    except EmitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"emitted {args.topic} (event {event_id})")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        letters = asyncio.run(_with_runtime(lambda rt: rt.dead_letters(args.limit)))
        if args.json:
            print(json.dumps(letters, indent=2, default=str))
            return 0
        if not letters:
            print("no dead letters")
        for letter in letters:
            last = letter["errors"][-1]["error"] if letter["errors"] else ""
            print(
                f"#{letter['id']}  {letter['step']}  topic={letter['topic']}  "
                f"attempts={letter['attempts']}  trace={letter['trace_id']}\n    {last}"
            )
        return 0
    if not args.all and not args.ids:
        print("error: give dead letter ids or --all", file=sys.stderr)
        return 2
    ids = None if args.all else [int(i) for i in args.ids]
    replayed = asyncio.run(_with_runtime(lambda rt: rt.replay(ids)))
    print(f"replayed {len(replayed)} dead letter(s)" + (f": {replayed}" if replayed else ""))
    return 0


# -- scaffolding --------------------------------------------------------------------------------


def _snake(name: str) -> str:
    name = re.sub(r"[^0-9A-Za-z]+", "_", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.strip("_").lower()


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in _snake(name).split("_"))


def cmd_new(args: argparse.Namespace) -> int:
    from app.scaffold import render_step, render_test

    snake, pascal = _snake(args.name), _pascal(args.name)
    if not snake or not snake[0].isalpha():
        print("error: NAME must start with a letter", file=sys.stderr)
        return 2
    feature = _snake(args.feature) if args.feature else snake
    steps_dir = _settings().steps_dir
    step_file = steps_dir / feature / f"{snake}_step.py"
    test_file = Path("tests") / "steps" / feature / f"test_{snake}_step.py"
    for path in (step_file, test_file):
        if path.exists():
            print(f"error: {path} already exists", file=sys.stderr)
            return 2
    for folder in (step_file.parent, test_file.parent):
        folder.mkdir(parents=True, exist_ok=True)
    init = step_file.parent / "__init__.py"
    if not init.exists():
        init.write_text(f'"""The {feature} feature."""\n')
    # tests/ is a package tree here: keep it one, so test module names never collide
    test_init = test_file.parent / "__init__.py"
    if (test_file.parent.parent / "__init__.py").exists() and not test_init.exists():
        test_init.write_text("")
    step_file.write_text(render_step(args.type, pascal, snake, feature))
    test_file.write_text(render_test(args.type, pascal, snake, feature, str(step_file)))
    print(f"created {step_file}\ncreated {test_file}")
    return 0


# -- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepwise", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("dev", help="everything in one process with reload (API, worker, cron)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-reload", action="store_true", help="do not restart on code changes")
    p.set_defaults(fn=cmd_dev)

    p = sub.add_parser("api", help="HTTP only: API, streams, Workbench")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(fn=cmd_api)

    p = sub.add_parser("worker", help="event deliveries and cron firings only")
    p.add_argument("--concurrency", type=int, help="deliveries run at once (default: settings)")
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("migrate", help="apply the database migrations (Alembic upgrade head)")
    p.set_defaults(fn=cmd_migrate)

    p = sub.add_parser("seed", help="insert the features' seed rows that are missing")
    p.set_defaults(fn=cmd_seed)

    p = sub.add_parser(
        "create-admin",
        help="make EMAIL an admin with a new password (creating the account if needed)",
    )
    p.add_argument("email")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p.set_defaults(fn=cmd_create_admin)

    p = sub.add_parser("graph", help="the step graph as text, JSON or Mermaid")
    p.add_argument("--format", choices=["text", "json", "mermaid"], default="text")
    p.set_defaults(fn=cmd_graph)

    p = sub.add_parser("emit", help="publish an event by hand")
    p.add_argument("topic")
    p.add_argument("data", help='the event data as JSON, e.g. \'{"text": "hi"}\'')
    p.add_argument("--delay", type=float, default=0.0, help="seconds before it is delivered")
    p.add_argument("--group", help="message group id (FIFO within the group)")
    p.set_defaults(fn=cmd_emit)

    p = sub.add_parser("dlq", help="dead letters: list or replay")
    dlq = p.add_subparsers(dest="dlq_command", required=True)
    q = dlq.add_parser("list", help="list dead letters with their errors")
    q.add_argument("--json", action="store_true")
    q.add_argument("--limit", type=int, default=100)
    q = dlq.add_parser("replay", help="put dead letters back in the queue")
    q.add_argument("ids", nargs="*")
    q.add_argument("--all", action="store_true")
    p.set_defaults(fn=cmd_dlq)

    p = sub.add_parser("new", help="scaffold a step file and its test")
    new = p.add_subparsers(dest="what", required=True)
    q = new.add_parser("step", help="a new step")
    q.add_argument("name", help="e.g. SendInvoice")
    q.add_argument("--type", choices=["api", "event", "cron"], default="api")
    q.add_argument("--feature", help="the folder under steps/ (default: from the name)")
    p.set_defaults(fn=cmd_new)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except StepConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
