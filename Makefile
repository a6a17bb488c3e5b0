# Stepwise: `make run` serves on http://127.0.0.1:3000, `make test` runs the whole suite.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python

.PHONY: run test lint format setup migrate messages bench clean

# uv comes from PyPI; installed into .tools/ when the machine has none.
.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python python3
	@touch $@

# Translations: each locales/<lang>/LC_MESSAGES/messages.po is compiled to its .mo (git-ignored).
MO_FILES := $(patsubst %.po,%.mo,$(wildcard locales/*/LC_MESSAGES/messages.po))

locales/%/LC_MESSAGES/messages.mo: locales/%/LC_MESSAGES/messages.po .venv/.synced
	.venv/bin/pybabel compile --domain messages --locale $* --input-file $< --output-file $@

setup: .venv/.synced $(MO_FILES)

messages: $(MO_FILES)

run: setup
	$(PY) -m app dev

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check app steps tests bench migrations
	.venv/bin/ruff format --check app steps tests bench migrations
	.venv/bin/mypy app

format: setup
	.venv/bin/ruff format app steps tests bench migrations
	.venv/bin/ruff check --fix app steps tests bench migrations

migrate: setup
	$(PY) -m app migrate

# The benchmarks, with the peers (Celery + Redis, procrastinate) from the `bench` group.
bench: setup
	$(UV) sync --frozen --group bench --python python3
	$(PY) bench/events.py --peers
	$(PY) bench/api_overhead.py

clean:
	rm -rf .venv .tools var/*.db var/*.db-* .pytest_cache .mypy_cache .ruff_cache
	rm -f locales/*/LC_MESSAGES/*.mo
