# One command each, on a fresh machine: `make run` (the hotline, locally) and `make test`.
# Both create .venv and install the pinned requirements the first time.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: install run test lint format check-config call bench

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: install  ## the hotline on this machine: Redis (if REDIS_URL is unset), worker, web; prints Twilio URLs
	$(PY) -m ivr run

test: install  ## the test suite (SQLite; PostgreSQL too when TEST_DATABASE_URL is set)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

check-config: install  ## validate config/hotline.yaml (or CONFIG=path)
	$(PY) -m ivr check $(CONFIG)

call: install  ## try a call: make call KEYS=3,2,1 [AT=2026-11-28T22:00] [FROM=+819012345678] [VERBOSE=1]
	@# The values reach the command through the environment, not pasted into its line: spoken
	@# words may hold quotes ("say:I can't log in").
	$(PY) -m ivr call $(if $(KEYS),--keys="$$KEYS",) $(if $(AT),--at="$$AT",) $(if $(FROM),--from="$$FROM",) $(if $(VERBOSE),--verbose,)

bench: install
	$(PY) bench/webhooks.py
