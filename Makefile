.PHONY: setup demo test lint
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/stn-deploy demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

test: setup
	.venv/bin/python -m pytest -q
