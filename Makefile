# pypluto: the two commands are `make demo` and `make test` (run as root on Debian 12).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test test-fast lint bench demo deps clean man service install-service fuzz

$(VPY):
	@echo "==> creating the virtualenv in $(VENV)"
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	@$(VPY) -m pip install -q --upgrade pip

install: $(VPY)
	@echo "==> installing pypluto (editable) with its test dependencies"
	@$(VPY) -m pip install -q -e '.[test]'
	@# byte code once, as a non-editable install does (PYTHONDONTWRITEBYTECODE
	@# would otherwise make every pluto/whack start recompile the tree)
	@$(VPY) -m compileall -q src

# System packages and peer daemons the tests need (idempotent; as root).
deps:
	@bash tools/install-deps.sh

test: install deps
	@echo "==> running the test suite"
	@$(VPY) -m pytest $(PYTEST_ARGS)

# Unit and engine tests only: no root, no peers.
test-fast: install
	@$(VPY) -m pytest -m "not netns and not interop and not espkernel" $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check src tests
	@$(VENV)/bin/mypy src

# Side-by-side benchmarks (bench/README.md times each module): about 40 min on a
# quiet machine, of which the last ~25 are the issue-18 hold of 100,000 IKE SAs
# for 600 s (bench/scale_hold.py); refuses a dirty tree (BENCH_ALLOW_DIRTY=1 marks
# the results -dirty).  BENCH=name runs a subset (BENCH=scale_hold: that hold alone)
bench: install deps
	@$(VPY) -c 'import vici' 2>/dev/null || $(VPY) -m pip install -q -e '.[bench]'
	@$(VPY) -m bench.run $(BENCH)

demo: install
	@bash tools/install-deps.sh --demo
	@$(VPY) tools/demo.py

# Man pages of pluto, whack and ipsec, generated from their argument parsers.
MANDIR ?= man
man: install
	@$(VPY) tools/gen-manpages.py --outdir $(MANDIR)

# The systemd unit with the paths `make install` created (see README, "Running under systemd").
BINDIR ?= $(CURDIR)/$(VENV)/bin
IPSEC_CONF ?= /etc/ipsec.conf
RUNDIR ?= /run/pluto
WATCHDOGSEC ?= 200
SERVICE_OUT ?= build/pluto.service
service:
	@mkdir -p $(dir $(SERVICE_OUT))
	@sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@IPSEC_CONF@|$(IPSEC_CONF)|g' \
	    -e 's|@RUNDIR@|$(RUNDIR)|g' -e 's|@WATCHDOGSEC@|$(WATCHDOGSEC)|g' contrib/pluto.service.in > $(SERVICE_OUT)
	@echo "==> $(SERVICE_OUT) (pluto from $(BINDIR))"

install-service: install service
	install -m 0644 $(SERVICE_OUT) /etc/systemd/system/pluto.service
	systemctl daemon-reload

# Coverage-guided fuzzing with atheris (issue 13): every target for FUZZ_SECONDS each,
# corpus, crashes and libFuzzer's log under FUZZ_DIR/<target>/ (outside the repo).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= wire ike_sk ike_plain esp config
FUZZ_DIR ?= /work/fuzz-runs
fuzz: install
	@$(VPY) -c 'import atheris, coverage' 2>/dev/null || $(VPY) -m pip install -q atheris coverage
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/$$t; \
		echo "==> fuzzing $$t for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/$$t/log)"; \
		$(VPY) -m fuzz.run $$t --seconds $(FUZZ_SECONDS) --workdir $(FUZZ_DIR)/$$t \
			2>>$(FUZZ_DIR)/$$t/log || { echo "$$t: crash, reproducer in $(FUZZ_DIR)/$$t/crashes/"; exit 1; }; \
		grep -E '^Done' $(FUZZ_DIR)/$$t/log | tail -1; \
		$(VPY) -m fuzz.cover $$t --workdir $(FUZZ_DIR)/$$t || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
