"""Start-up refuses a bad step set with the file, the field and the reason, in one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.runtime import ApiStepConfig, StepConfigError, discover
from tests.support import run_cli, write_steps

GOOD_HANDLER = "async def handler(req, ctx):\n    return {'status': 200, 'body': {}}\n"


def problems_of(tmp_path: Path, files: dict[str, str]) -> str:
    with pytest.raises(StepConfigError) as info:
        discover(write_steps(tmp_path, files))
    return str(info.value)


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        ("{'type': 'api', 'path': '/a', 'method': 'GET'}", "config.name", "missing"),
        ("{'name': 'A', 'type': 'rest', 'path': '/a'}", "config.type", "unknown step type 'rest'"),
        ("{'name': 'A', 'path': '/a'}", "config.type", "every step needs a type"),
        ("{'name': 'A', 'type': 'api', 'path': '/a', 'method': 'FETCH'}", "config.method", "'GET'"),
        (
            "{'name': 'A', 'type': 'api', 'path': 'a', 'method': 'GET'}",
            "config.path",
            "must start with '/'",
        ),
        (
            "{'name': 'A', 'type': 'api', 'path': '/a', 'method': 'GET', 'colour': 1}",
            "config.colour",
            "Extra inputs",
        ),
        (
            "{'name': 'A', 'type': 'api', 'path': '/a', 'method': 'GET', 'auth': 'root'}",
            "config.auth",
            "'public'",
        ),
        (
            "{'name': 'A', 'type': 'api', 'path': '/a', 'method': 'GET', 'body': dict}",
            "config.body",
            "subclass",
        ),
        ("{'name': 'A', 'type': 'event', 'subscribes': []}", "config.subscribes", "at least 1"),
        (
            "{'name': 'A', 'type': 'event', 'subscribes': ['x'], 'retry': {'max_attempts': 0}}",
            "config.retry.max_attempts",
            "greater than or equal to 1",
        ),
        (
            "{'name': 'A', 'type': 'event', 'subscribes': ['x'], 'retry': {'backoff': 'random'}}",
            "config.retry.backoff",
            "'fixed'",
        ),
        (
            "{'name': 'A', 'type': 'cron', 'schedule': '61 * * * *'}",
            "config.schedule",
            "not a valid cron",
        ),
        ("{'name': 'A', 'type': 'cron', 'schedule': '* * * *'}", "config.schedule", "5-field"),
        (
            "{'name': 'A', 'type': 'cron', 'schedule': '0 0 * * *', 'timezone': 'Mars/Olympus'}",
            "config.timezone",
            "unknown time zone",
        ),
    ],
)
def test_a_bad_config_names_the_file_the_field_and_the_reason(
    tmp_path: Path, config: str, field: str, reason: str
) -> None:
    message = problems_of(tmp_path, {"bad_step.py": f"config = {config}\n{GOOD_HANDLER}"})
    assert "bad_step.py" in message
    assert field in message
    assert reason in message


def test_a_step_without_config_or_handler_is_refused(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        {
            "no_config_step.py": GOOD_HANDLER,
            "no_handler_step.py": "config = {'name': 'B', 'type': 'api', 'path': '/b', 'method': 'GET'}\n",
            "one_arg_step.py": "config = {'name': 'C', 'type': 'api', 'path': '/c', 'method': 'GET'}\n"
            "async def handler(req):\n    return None\n",
        },
    )
    assert "no_config_step.py: config: missing" in message
    assert "no_handler_step.py: handler: missing" in message
    assert "one_arg_step.py: handler: must take two arguments" in message
    assert "3 problem(s)" in message


def test_an_import_error_is_reported_with_the_file(tmp_path: Path) -> None:
    message = problems_of(tmp_path, {"broken_step.py": "import no_such_module_here\n"})
    assert "broken_step.py: cannot be imported: ModuleNotFoundError" in message


def test_duplicate_names_and_routes_are_refused(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        {
            "a_step.py": "config = {'name': 'Same', 'type': 'api', 'path': '/u/{id}', 'method': 'GET'}\n"
            + GOOD_HANDLER,
            "b_step.py": "config = {'name': 'Same', 'type': 'api', 'path': '/v', 'method': 'GET'}\n"
            + GOOD_HANDLER,
            "c_step.py": "config = {'name': 'Other', 'type': 'api', 'path': '/u/{user_id}', 'method': 'get'}\n"
            + GOOD_HANDLER,
        },
    )
    assert "b_step.py: config.name: duplicate step name 'Same'" in message
    assert "c_step.py: config.path: duplicate route GET /u/{user_id}" in message
    assert "a_step.py" in message


def test_a_typed_config_is_accepted_as_well_as_a_dict(tmp_path: Path) -> None:
    registry = discover(
        write_steps(
            tmp_path,
            {
                "typed_step.py": "from app.runtime import ApiStepConfig\n"
                "config = ApiStepConfig(name='Typed', type='api', path='/t', method='GET')\n"
                + GOOD_HANDLER,
                "plain_step.py": "config = {'name': 'Plain', 'type': 'api', 'path': '/p', 'method': 'post'}\n"
                + GOOD_HANDLER,
            },
        )
    )
    assert isinstance(registry.get("Typed").config, ApiStepConfig)
    assert registry.get("Plain").config.method == "POST"  # type: ignore[union-attr]


def test_the_cli_refuses_to_start_with_one_readable_message(tmp_path: Path) -> None:
    steps = write_steps(
        tmp_path, {"bad_step.py": "config = {'name': 'A', 'type': 'nope'}\n" + GOOD_HANDLER}
    )
    result = run_cli("graph", env={"STEPS_DIR": str(steps)})
    assert result.returncode == 1
    assert "bad_step.py: config.type: unknown step type 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
