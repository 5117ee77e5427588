# Every setup step lives here: `make demo` and `make test` work from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SAMPLES := samples/graph.jsonl samples/flat.jsonl samples/malformed.jsonl samples/mbox samples/eml

.PHONY: profile install chromium demo test test-reliability lint bench bench-full clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# chromium: the browser tests/test_report.py opens `mailcli report`'s page in (Debian's package); installed
# when missing and this is root with apt-get (CI is), else the browser tests say why they skip
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the report's browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser tests will skip"; fi; }

## demo: ingest the samples, analyse them with a pool in burst mode on the embedded defaults, write the
## report; without Ollama the results' last lines say why conversations are partial and the fix
demo: install
	$(BIN)/mailcli ingest $(SAMPLES)
	$(BIN)/mailcli workers start --min 2 --max 4 --burst
	$(BIN)/mailcli export -o "$${MAILCLI_HOME:-data}/export.jsonl"
	$(BIN)/mailcli results --limit 20
	$(BIN)/mailcli report -o "$${MAILCLI_HOME:-data}/report.html"
	@echo "report: $$(cd "$${MAILCLI_HOME:-data}" && pwd)/report.html"

## test: the whole suite (real Redis, real SQLite, real worker processes)
test: install chromium
	$(BIN)/python -m pytest -q -m "not slow"

test-reliability: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check mailcli tests benchmarks

bench: install
	$(BIN)/python -m benchmarks.run

bench-full: install
	$(BIN)/python -m benchmarks.run --full

# where the CPU goes: make profile SCENARIO=pool|ingest|status (py-spy across the processes)
SCENARIO ?= pool
profile: install
	$(BIN)/python -m benchmarks.profile $(SCENARIO)

# stops the embedded Redis of ./data first (a daemon left running would hold deleted files)
clean:
	-@if [ -x $(BIN)/mailcli ]; then env -u REDIS_URL MAILCLI_HOME=data $(BIN)/mailcli redis stop --force; \
	elif [ -f data/redis/redis.pid ]; then kill $$(cat data/redis/redis.pid) 2>/dev/null || true; fi
	rm -rf $(VENV) data *.egg-info .pytest_cache .ruff_cache
