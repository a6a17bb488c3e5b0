"""Docker: docker-compose.yml and the Dockerfile read as data (no Docker engine runs here), and
docker/entrypoint.sh run for real with this project's Python, against SQLite and Postgres."""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from app.settings import DEV_JWT_SECRET, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERIGNORE = ROOT / ".dockerignore"

SETTINGS = {name.upper() for name in Settings.model_fields}
# Read by docker/entrypoint.sh itself, not by the app.
ENTRYPOINT_VARIABLES = {"MIGRATE", "DATABASE_WAIT_SECONDS"}


# -- docker-compose.yml -----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(value: Any, host: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR-default}` and `${VAR:-default}`, from `host`."""

    def one(match: re.Match[str]) -> str:
        name, op, default = match["name"], match["op"], match["default"] or ""
        if op == ":-":
            return host.get(name) or default
        if op == "-":
            return host.get(name, default)
        return host.get(name, "")

    return _VARIABLE.sub(one, str(value))


def environment(service: dict[str, Any], host: dict[str, str] | None = None) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: interpolate(value, host or {}) for key, value in raw.items()}


def container_settings(env: dict[str, str]) -> Settings:
    """What the app builds from a container environment, after the entrypoint's clean-up."""
    values = {k.lower(): v for k, v in env.items() if k in SETTINGS}
    if not values.get("jwt_secret"):
        values.pop("jwt_secret", None)  # the entrypoint unsets an empty JWT_SECRET
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(duration))
    )


def test_compose_runs_postgres_the_api_and_a_worker_from_one_image() -> None:
    found = services()
    assert set(found) == {"postgres", "api", "worker"}
    api, worker = found["api"], found["worker"]
    assert api["build"] == worker["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    assert (ROOT / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
    assert api["image"] == worker["image"]
    assert api["command"] == ["api"]
    assert worker["command"][0] == "worker"


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_its_health() -> None:
    postgres = services()["postgres"]
    assert postgres["image"].startswith("postgres:")
    volume, target = postgres["volumes"][0].split(":")[:2]
    assert volume in compose()["volumes"]
    assert target == "/var/lib/postgresql/data"
    test = postgres["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "pg_isready"
    env = environment(postgres)
    assert test[test.index("-U") + 1] == env["POSTGRES_USER"]
    assert test[test.index("-d") + 1] == env["POSTGRES_DB"]


def test_api_and_worker_start_once_postgres_is_healthy() -> None:
    for name in ("api", "worker"):
        assert services()[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_api_publishes_its_port_and_checks_it_is_ready() -> None:
    api = services()["api"]
    assert "PORT" not in environment(api)  # the image's PORT=3000, which the Dockerfile exposes
    assert [interpolate(p, {}) for p in api["ports"]] == ["3000:3000"]
    assert [interpolate(p, {"API_PORT": "8080"}) for p in api["ports"]] == ["8080:3000"]
    probe = " ".join(api["healthcheck"]["test"])
    assert "http://127.0.0.1:3000/ready" in probe
    assert api["healthcheck"]["retries"] >= 1


def test_the_worker_can_be_scaled() -> None:
    worker = services()["worker"]
    # `docker compose up --scale worker=3` fails on a fixed name or a fixed host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker
    # It serves no HTTP: the image's /health check would mark it unhealthy.
    assert worker["healthcheck"] == {"disable": True}


def test_every_variable_compose_sets_for_the_app_is_a_real_setting() -> None:
    script = ENTRYPOINT.read_text()
    for name in ("api", "worker"):
        for variable in environment(services()[name]):
            assert variable in SETTINGS | ENTRYPOINT_VARIABLES, (
                f"{name}: {variable} is neither a setting of app/settings.py nor read by the "
                "entrypoint"
            )
    for variable in ENTRYPOINT_VARIABLES:
        assert f"{variable}=" in script  # really read there


def test_compose_points_the_app_at_its_postgres_and_starts_as_a_development_demo() -> None:
    found = services()
    postgres = environment(found["postgres"])
    for name in ("api", "worker"):
        settings = container_settings(environment(found[name]))
        url = make_url(settings.database_url)
        assert url.get_backend_name() == "postgresql"
        assert (url.host, url.port) == ("postgres", 5432)
        assert (url.username, url.password, url.database) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        )
        # `docker compose up` alone: development, with the development secret
        assert settings.env == "development"
        assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET


def test_compose_in_production_demands_a_real_jwt_secret() -> None:
    api = services()["api"]
    with pytest.raises(ValidationError, match="JWT_SECRET must be set"):
        container_settings(environment(api, {"STEPWISE_ENV": "production"}))
    secret = "s" * 48
    settings = container_settings(
        environment(api, {"STEPWISE_ENV": "production", "JWT_SECRET": secret})
    )
    assert settings.is_production
    assert settings.jwt_secret.get_secret_value() == secret


def test_containers_get_longer_to_stop_than_running_handlers_get_to_finish() -> None:
    for name in ("api", "worker"):
        service = services()[name]
        grace = container_settings(environment(service)).shutdown_grace_seconds
        # the API's server waits SHUTDOWN_GRACE_SECONDS + 5 (app/cli.py) before giving up
        assert seconds(service["stop_grace_period"]) > grace + 5


# -- docker/Dockerfile ------------------------------------------------------------------------------


def instructions() -> list[tuple[int, str, str]]:
    """(stage, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        if pending + line.strip():
            lines.append(" ".join((pending + line).split()))
        pending = ""
    result, stage = [], -1
    for line in lines:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        result.append((stage, keyword.upper(), args))
    return result


def final_stage() -> list[tuple[str, str]]:
    found = instructions()
    last = found[-1][0]
    return [(keyword, args) for stage, keyword, args in found if stage == last]


def test_the_image_is_built_in_stages_on_python_3_11_slim() -> None:
    found = instructions()
    args = {
        name: default
        for stage, keyword, line in found
        if stage == -1 and keyword == "ARG"
        for name, _, default in [line.partition("=")]
    }
    bases = [interpolate(a.split()[0], args) for _, k, a in found if k == "FROM"]
    python_bases = [base for base in bases if base.startswith("python:")]
    assert len(python_bases) >= 2  # a builder and a slim runtime
    assert all(base.startswith("python:3.11-slim") for base in python_bases)
    # the only other stage provides Node.js >= 20.6 for the JS/TS steps
    assert [b for b in bases if not b.startswith("python:")] == ["node:20-bookworm-slim"]


def test_dependencies_install_from_the_lock_before_the_source_is_copied() -> None:
    found = [(keyword, args) for _, keyword, args in instructions()]
    syncs = [i for i, (k, a) in enumerate(found) if k == "RUN" and "uv sync" in a]
    assert len(syncs) == 2
    for i in syncs:
        assert "--frozen" in found[i][1] and "--no-dev" in found[i][1]
    deps, project = syncs
    assert "--no-install-project" in found[deps][1]
    assert "source=uv.lock" in found[deps][1] and "type=cache" in found[deps][1]
    copy_source = found.index(("COPY", ". ."))
    assert deps < copy_source < project


def test_the_image_runs_as_an_unprivileged_user_and_checks_health() -> None:
    stage = final_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric: runAsNonRoot can verify it
    [healthcheck] = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert "/health" in healthcheck and "CMD" in healthcheck
    assert ("EXPOSE", "3000") in stage
    assert ("ENTRYPOINT", '["/app/docker/entrypoint.sh"]') in stage
    assert ("CMD", '["api"]') in stage
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert "ENV=production" in env and "HOST=0.0.0.0" in env and "PORT=3000" in env
    # the secret comes from the environment at run time, never from the image
    assert "JWT_SECRET" not in " ".join(a for _, k, a in instructions() if k in ("ENV", "ARG"))


def test_the_final_stage_copies_what_the_app_needs() -> None:
    targets = {args.split()[-1] for keyword, args in final_stage() if keyword == "COPY"}
    needed = {"app", "steps", "migrations", "alembic.ini", "locales", ".venv", "node_modules"}
    assert {f"/app/{name}" for name in needed} <= targets
    assert "/app/docker/entrypoint.sh" in targets
    assert "/usr/local/bin/node" in targets  # the JS/TS steps' runtime


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(parts[i], pattern)
            for i, p in enumerate(prefixes)
        ):
            result = not negate
    return result


def test_the_build_context_keeps_the_source_and_leaves_out_local_state() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        "app/main.py",
        "steps/system/health_step.py",
        "migrations/env.py",
        "alembic.ini",
        "locales/vi/LC_MESSAGES/messages.po",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "docker/entrypoint.sh",
    ):
        assert not ignored(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".git",
        "var/stepwise.db",
        ".env",
        "tests/conftest.py",
        "app/__pycache__/main.cpython-311.pyc",
        "locales/vi/LC_MESSAGES/messages.mo",
        "node_modules/x/index.js",
    ):
        assert ignored(path, patterns), path


def test_catalogues_are_compiled_in_the_build_when_the_project_has_them(tmp_path: Path) -> None:
    """The guarded RUN, run by sh here: pybabel when locales/ exists, an empty folder if not."""
    [run] = [a for _, k, a in instructions() if k == "RUN" and "pybabel compile" in a]
    script = run[run.index("if [ -d locales ]") :]
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "pybabel"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)

    without = tmp_path / "without"
    without.mkdir()
    subprocess.run(["sh", "-ec", script], cwd=without, check=True)
    assert (without / "locales").is_dir() and not calls.exists()

    with_locales = tmp_path / "with"
    (with_locales / "locales" / "vi" / "LC_MESSAGES").mkdir(parents=True)
    (with_locales / ".venv" / "bin").mkdir(parents=True)
    (with_locales / ".venv" / "bin" / "pybabel").symlink_to(fake)
    subprocess.run(["sh", "-ec", script], cwd=with_locales, check=True)
    assert calls.read_text().split() == ["compile", "-d", "locales", "-D", "messages"]


# -- docker/entrypoint.sh, run here -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (never a fixed sleep for a guess)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {value!r})")
        time.sleep(0.05)


def entrypoint_env(**overrides: str) -> dict[str, str]:
    """The test's environment without any app setting in it, this project's Python first."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS | ENTRYPOINT_VARIABLES}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        STEPS_DIR=str(ROOT / "steps"),
        HOST="127.0.0.1",
        ENV="test",
        LOG_LEVEL="INFO",
        LOG_FORMAT="console",
        SQLITE_SYNCHRONOUS="NORMAL",
    )
    env.update(overrides)
    return env


class Running:
    """The entrypoint as a background process, its output in files we can poll."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc, self.out, self.err = proc, out, err

    @property
    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def cmdline(self) -> list[str]:
        raw = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()
        return [part.decode() for part in raw.split(b"\0") if part]

    def wait_for(self, check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
        """Poll `check` while the process runs (start-up is slow on a loaded machine)."""

        def alive_and(check: Callable[[], Any] = check) -> Any:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"exited with {self.proc.returncode} before {what}:\n{self.output}"
                )
            return check()

        return poll(alive_and, timeout=timeout, what=what)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@contextmanager
def entrypoint(tmp_path: Path, *args: str, **env: str) -> Iterator[Running]:
    out, err = tmp_path / f"out-{uuid.uuid4().hex[:6]}", tmp_path / f"err-{uuid.uuid4().hex[:6]}"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), *args],
            cwd=tmp_path,  # no .env, no var/ of the checkout
            env=entrypoint_env(**env),
            stdout=out_file,
            stderr=err_file,
        )
    try:
        yield Running(proc, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def run_entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        cwd=tmp_path,
        env=entrypoint_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def http_status(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
    except httpx.TransportError:
        return None


def test_the_entrypoint_is_posix_sh() -> None:
    result = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    script = ENTRYPOINT.read_text()
    assert script.startswith("#!/bin/sh\n")
    assert "set -eu" in script
    assert "[[" not in script and "function " not in script  # no bash in a slim image's sh


def test_other_commands_are_exec_d_as_given_without_touching_the_database(
    tmp_path: Path,
) -> None:
    db = tmp_path / "untouched.db"
    with entrypoint(
        tmp_path,
        "python",
        "-c",
        "import os, sys; print(os.getpid(), sys.argv[1:])",
        "one",
        "two words",
        DATABASE_URL=f"sqlite:///{db}",
    ) as running:
        assert running.proc.wait(timeout=60) == 0
        pid = running.proc.pid
    assert running.out.read_text().strip() == f"{pid} ['one', 'two words']"  # same process: exec
    assert not db.exists()


def test_production_without_a_jwt_secret_stops_before_anything_starts(tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    # compose passes an unset JWT_SECRET as an empty string
    result = run_entrypoint(
        tmp_path, "api", ENV="production", JWT_SECRET="", DATABASE_URL=f"sqlite:///{db}"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("entrypoint: invalid settings: JWT_SECRET must be set")
    assert "Traceback" not in result.stderr
    assert not db.exists()


def test_migrate_alone_is_a_release_step(tmp_path: Path) -> None:
    db = tmp_path / "release.db"
    result = run_entrypoint(tmp_path, "migrate", DATABASE_URL=f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("migrations applied (sqlite)") == 1
    tables = set(inspect(create_engine(f"sqlite:///{db}")).get_table_names())
    assert {"alembic_version", "stepwise_events", "stepwise_deliveries"} <= tables


@pytest.mark.slow
def test_it_gives_up_on_an_unreachable_database_after_its_timeout(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    result = run_entrypoint(
        tmp_path,
        "api",
        DATABASE_URL=f"postgresql://stepwise:secret@127.0.0.1:{port}/stepwise",
        DATABASE_WAIT_SECONDS="2",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert f"waiting for database 127.0.0.1:{port}/stepwise (up to 2s)" in result.stderr
    assert f"entrypoint: database 127.0.0.1:{port}/stepwise not reachable after 2s" in (
        result.stderr
    )
    assert "giving up" in result.stderr and "secret" not in result.stderr
    assert "migrations applied" not in result.stdout
    assert 2 <= elapsed < 30


@pytest.mark.slow
@pytest.mark.parametrize(("migrate", "ready"), [("1", 200), ("0", 503)])
def test_api_migrates_unless_told_not_to_then_serves_and_stops_on_sigterm(
    tmp_path: Path, migrate: str, ready: int
) -> None:
    port = free_port()
    with entrypoint(
        tmp_path, "api", MIGRATE=migrate, PORT=str(port), DATABASE_URL=f"sqlite:///{tmp_path}/a.db"
    ) as running:
        running.wait_for(lambda: http_status(port, "/health") == 200, f"/health on {port}")
        assert http_status(port, "/ready") == ready  # 503: migrations pending
        # exec'd: the shell's process is now the API itself, so SIGTERM reaches it
        assert running.cmdline()[1:] == ["-m", "app", "api"]
        assert running.stop() == 0, running.output
    assert ("MIGRATE=0: not migrating" in running.output) == (migrate == "0")


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """The URL of a database that does not exist yet, on the test Postgres server (dropped after)."""
    url = make_url(pg_url).set(database=f"stepwise_docker_{uuid.uuid4().hex[:8]}")
    yield url.render_as_string(hide_password=False)
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


@pytest.mark.slow
@pytest.mark.postgres
def test_it_waits_for_postgres_then_migrates_and_serves(tmp_path: Path, fresh_pg_url: str) -> None:
    url = make_url(fresh_pg_url)
    port = free_port()
    with entrypoint(tmp_path, "api", PORT=str(port), DATABASE_URL=fresh_pg_url) as running:
        # the database does not exist yet, as while Postgres initialises: the entrypoint waits
        running.wait_for(lambda: "waiting for database" in running.output, "waiting message")
        assert running.proc.poll() is None
        assert http_status(port, "/health") is None
        admin = url.set(drivername="postgresql", database="postgres")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{url.database}"')
        running.wait_for(lambda: http_status(port, "/ready") == 200, "/ready")
        assert f"database {url.host}:{url.port}/{url.database} is up" in running.output
        assert "migrations applied (postgres)" in running.output
        assert running.stop() == 0, running.output


@pytest.mark.slow
@pytest.mark.postgres
def test_worker_gets_its_arguments_and_exits_0_on_sigterm(tmp_path: Path, pg_url: str) -> None:
    with entrypoint(tmp_path, "worker", "--concurrency", "3", DATABASE_URL=pg_url) as running:
        running.wait_for(lambda: "worker process ready" in running.output, "worker ready")
        assert running.cmdline()[1:] == ["-m", "app", "worker", "--concurrency", "3"]
        assert "waiting for database" not in running.output  # it was reachable at once
        assert running.stop() == 0, running.output


# -- docs/deployment.md -----------------------------------------------------------------------------

DEPLOYMENT = ROOT / "docs" / "deployment.md"
ROLES = {"api", "worker", "dev", "migrate"}


def snippets(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DEPLOYMENT.read_text(), flags=re.DOTALL)


def test_the_deployment_notes_name_only_real_settings() -> None:
    text = DEPLOYMENT.read_text()
    section = text.split("## Environment", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([A-Z_]+)`", section, flags=re.MULTILINE))
    named |= {n for row in re.findall(r"^\| `([A-Z_]+)`, `([A-Z_]+)`", section, re.M) for n in row}
    assert {"JWT_SECRET", "DATABASE_URL", "CORS_ORIGINS", "ENV", "LOG_FORMAT"} <= named
    assert named <= SETTINGS | ENTRYPOINT_VARIABLES, named - SETTINGS - ENTRYPOINT_VARIABLES


def test_the_fly_and_railway_examples_parse_and_run_known_processes() -> None:
    import tomllib

    fly, railway = (tomllib.loads(s) for s in snippets("toml"))
    assert set(fly["env"]) <= SETTINGS | ENTRYPOINT_VARIABLES
    assert fly["kill_timeout"] > float(fly["env"]["SHUTDOWN_GRACE_SECONDS"]) + 5
    assert fly["build"]["dockerfile"] == "docker/Dockerfile"
    assert fly["deploy"]["release_command"] == "python -m app migrate"
    for command in fly["processes"].values():
        program, role, *_ = command.split()
        assert program == "/app/docker/entrypoint.sh" and role in ROLES
    assert fly["http_service"]["internal_port"] == 3000
    assert fly["http_service"]["checks"][0]["path"] == "/ready"
    assert railway["build"]["dockerfilePath"] == "docker/Dockerfile"
    assert railway["deploy"]["startCommand"].split()[:2] == ["/app/docker/entrypoint.sh", "api"]
    assert railway["deploy"]["healthcheckPath"] == "/ready"


def test_the_kubernetes_example_parses_and_matches_the_image() -> None:
    [manifest] = snippets("yaml")
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(manifest)}
    assert set(docs["stepwise"]["stringData"]) <= SETTINGS
    for name in ("stepwise-migrate", "stepwise-api", "stepwise-worker"):
        pod = docs[name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
        [container] = pod["containers"]
        assert container["args"][0] in ROLES
        assert {e["name"] for e in container.get("env", [])} <= SETTINGS | ENTRYPOINT_VARIABLES
    api = docs["stepwise-api"]["spec"]["template"]["spec"]
    [container] = api["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["ports"][0]["containerPort"] == 3000
    for name in ("stepwise-api", "stepwise-worker"):
        pod = docs[name]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        grace = float({e["name"]: e["value"] for e in container["env"]}["SHUTDOWN_GRACE_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] > grace + 5
