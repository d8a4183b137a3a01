# The two entry points of the README. Both set everything up first (idempotent).
.PHONY: setup run test lint bench openapi

setup:
	./scripts/setup.sh

run: setup
	./scripts/hyperd-up.sh
	.venv/bin/hyper run --rm busybox sh -c 'echo "Hello from $$(hostname), a micro-VM running kernel $$(uname -r)"'

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports

test: lint
	.venv/bin/pytest -ra

bench: setup
	.venv/bin/python bench/startup.py
	.venv/bin/python bench/api.py

openapi: setup
	.venv/bin/python -m hyper.daemon.openapi > docs/api/openapi.json
