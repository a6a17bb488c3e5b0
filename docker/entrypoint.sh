#!/bin/sh
# The container's entrypoint: check the settings, wait for the database, migrate, then become
# the process named by the first argument (api | worker | dev), or run any other command as is.
#
#   entrypoint.sh api [--port N]            HTTP (the image's default command)
#   entrypoint.sh worker [--concurrency N]  event deliveries and cron firings
#   entrypoint.sh dev [--no-reload]         everything in one process
#   entrypoint.sh migrate                   only the migrations (a release step, a Kubernetes Job)
#   entrypoint.sh python -m app dlq list    anything else: exec'd as given
#
# Environment (besides the app's own settings):
#   MIGRATE=0               skip `python -m app migrate` (when a release step or the API migrates;
#                           running it everywhere is safe too: an advisory lock serialises migrators)
#   DATABASE_WAIT_SECONDS   how long to wait for Postgres before giving up (default 60)
set -eu

DATABASE_WAIT_SECONDS="${DATABASE_WAIT_SECONDS:-60}"
MIGRATE="${MIGRATE:-1}"
export DATABASE_WAIT_SECONDS

log() {
    echo "entrypoint: $*" >&2
}

# Compose passes `JWT_SECRET: ${JWT_SECRET:-}` through as an empty string when it is not set on
# the host. An empty key is never valid: treat it as unset, so development uses its own
# default and production refuses to start with the settings' own message.
if [ -z "${JWT_SECRET:-}" ]; then
    unset JWT_SECRET
fi

# Loads the settings (a bad one stops here, with its message) and, for Postgres, retries a
# connection until DATABASE_WAIT_SECONDS have passed. The app's own Python and psycopg do it:
# the image has no pg_isready.
wait_for_database() {
    python - <<'PY'
import os
import sys
import time

from pydantic import ValidationError


def fail(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr)
    sys.exit(1)


try:
    from app.settings import Settings

    settings = Settings()
except ValidationError as exc:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        field = ".".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{field}: {message}" if field else message)
    fail("invalid settings: " + "; ".join(problems))

from sqlalchemy.engine import make_url

url = make_url(settings.database_url)
if not url.get_backend_name().startswith("postgres"):
    sys.exit(0)  # SQLite: a file, nothing to wait for

import psycopg

where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
try:
    budget = float(os.environ["DATABASE_WAIT_SECONDS"])
except ValueError:
    fail(f"DATABASE_WAIT_SECONDS must be a number of seconds, not {os.environ['DATABASE_WAIT_SECONDS']!r}")
deadline = time.monotonic() + budget
attempt, last_error = 0, ""
while True:
    attempt += 1
    left = deadline - time.monotonic()
    try:
        # libpq takes whole seconds, at least 2
        with psycopg.connect(conninfo, connect_timeout=max(2, min(10, int(left) + 1))) as conn:
            conn.execute("SELECT 1")
        if attempt > 1:
            print(f"entrypoint: database {where} is up", file=sys.stderr)
        sys.exit(0)
    except psycopg.Error as exc:
        last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    left = deadline - time.monotonic()
    if left <= 0:
        fail(
            f"database {where} not reachable after {budget:g}s "
            f"({attempt} attempts; last error: {last_error}); giving up"
        )
    if attempt == 1:
        print(
            f"entrypoint: waiting for database {where} (up to {budget:g}s): {last_error}",
            file=sys.stderr,
        )
    time.sleep(min(1.0, left))
PY
}

role="${1:-api}"
if [ "$#" -gt 0 ]; then
    shift
fi

case "$role" in
    api | worker | dev)
        wait_for_database
        case "$MIGRATE" in
            0 | false | no)
                log "MIGRATE=$MIGRATE: not migrating"
                ;;
            *)
                python -m app migrate
                ;;
        esac
        # exec: the Python process replaces this shell, so SIGTERM from the platform reaches it.
        # It listens on HOST:PORT from the settings (the image sets HOST=0.0.0.0).
        exec python -m app "$role" "$@"
        ;;
    migrate)
        wait_for_database
        exec python -m app migrate "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
