# Stepwise: `make run` serves on http://127.0.0.1:3000, `make test` runs the whole suite.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
NPM := $(shell command -v node >/dev/null 2>&1 && command -v npm 2>/dev/null)

.PHONY: run test lint format setup migrate messages bench audit clean

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


messages: $(MO_FILES)

# JavaScript/TypeScript steps: esbuild (pinned in package-lock.json) when Node.js is here. No
# install scripts run: esbuild works from its platform package without its postinstall.
ifneq ($(NPM),)
NODE_SETUP := node_modules/.synced
else
NODE_SETUP := node-missing
endif

node_modules/.synced: package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	@touch $@

.PHONY: node-missing
node-missing:
	@echo "Node.js/npm not found: skipping npm ci (JavaScript/TypeScript steps are not loaded)"

setup: .venv/.synced $(MO_FILES) $(NODE_SETUP)

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
	$(PY) bench/idle.py
	$(PY) bench/load.py

# Known vulnerabilities in every locked dependency (all groups and extras: uv.lock exported with
# its hashes) and in the Node.js packages. NEEDS NETWORK ACCESS: pip-audit asks PyPI's advisory
# data, npm audit the npm registry. Not part of `make test` (tests never need the network).
AUDIT_REQUIREMENTS := var/audit-requirements.txt

audit: setup
	@$(PY) -c "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/', timeout=10)" 2>/dev/null \
	  || { echo "make audit: cannot reach https://pypi.org: the audit needs network access (offline? behind a proxy: set HTTPS_PROXY)" >&2; exit 2; }
	@mkdir -p var
	$(UV) export --frozen --all-groups --all-extras --no-emit-project --format requirements.txt --output-file $(AUDIT_REQUIREMENTS) --quiet
	.venv/bin/pip-audit --strict --require-hashes --disable-pip --progress-spinner off --desc on -r $(AUDIT_REQUIREMENTS)
ifneq ($(NPM),)
	$(NPM) audit --omit=dev --audit-level=moderate
endif

clean:
	rm -rf .venv .tools node_modules var/*.db var/*.db-* .pytest_cache .mypy_cache .ruff_cache
	rm -f locales/*/LC_MESSAGES/*.mo
