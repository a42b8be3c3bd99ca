# `make test` is the README's test command and what CI runs (.ci/run): it installs everything the suite
# needs into a venv of its own, then runs the linters and every test. `make check` is the contributor's
# fast path (no root, Java or Maven needed). `make quickstart` runs the quick start in that venv.
#
# Every Python package comes from constraints.txt, which pins the whole resolution of the test extra:
# with one candidate per package pip never backtracks (unpinned, boto3/botocore/aiobotocore send it
# through minutes of candidates, s3fs and moto pin them differently). `make lock` re-resolves the pins.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
UV_OPTS := --quiet --python $(PY)
CONSTRAINTS := constraints.txt
# Installs compile every module to bytecode once (pip does; uv does not unless asked): where Python may
# not write bytecode (PYTHONDONTWRITEBYTECODE, a read-only venv), every interpreter the tests start would
# otherwise compile pytest, hypothesis, pyarrow's Python side... again from source, a second or more each.
UV_INSTALL := $(UV) pip install $(UV_OPTS) --compile-bytecode -c $(CONSTRAINTS)
# The extras whose whole resolution constraints.txt pins (combe[test] pulls in every other extra).
LOCK_EXTRAS := test

# The tests `make check` leaves out: those needing the Kafka broker, the S3 server or a browser (the
# markers are set in tests/conftest.py by the fixtures a test uses), and those marked slow (many processes
# or a large dataset each; `make test` runs them all).
LEFT_OUT := kafka or s3 or browser or slow

# The linters, for `lint` and `test` alike: ruff (rules in pyproject.toml), and mypy on the package as
# installed (see tools/typecheck.py).
RUFF := $(PY) -m ruff check .
TYPECHECK := $(PY) tools/typecheck.py

.PHONY: test test-deps check lint quickstart lock corpus

# The repository's own Python (combe's folders, tests/support, bench/, examples/) compiled to bytecode before
# the tests, once: the editable install leaves it as source, and where Python may not write bytecode
# (PYTHONDONTWRITEBYTECODE, as CI and this machine run) every worker and every process a test starts would
# compile what it imports again (the .pyc files are git-ignored). Hidden folders (.venv, .git) and build/
# are left out.
COMPILE := $(PY) -m compileall -q -x '/\.|/build/' .

# ruff, then the tests with mypy beside them: mypy's 20 s from an empty cache are one core's, and its report
# is printed after theirs; either failing fails the target. $(1): pytest's options.
define lint_and_test
	$(RUFF)
	@echo "$(TYPECHECK) (beside the tests; its report follows theirs)"
	@$(TYPECHECK) > $(VENV)/typecheck.log 2>&1 & types=$$!; \
	$(COMPILE) && $(PY) -m pytest $(1); tests=$$?; \
	wait $$types; typed=$$?; cat $(VENV)/typecheck.log; \
	test $$tests -eq 0 && test $$typed -eq 0
endef

# Three workers on two cores: the suite's tests spend part of their time waiting on the processes, broker and
# S3 server they start, and a third worker fills those waits (279 s against 300 s with two, on a quiet 2-core
# machine).
test: test-deps
	$(call lint_and_test,-n 3)

# The fast path, meant to take under a minute on a quiet 2-core machine (README.md, "Quick start", says how
# long it takes today). Property tests try a tenth of their examples (the "check" hypothesis profile, tests/conftest.py).
check: $(VENV)/.test-deps
	$(call lint_and_test,-m "not ($(LEFT_OUT))" --hypothesis-profile=check)

lint: $(VENV)/.test-deps
	$(RUFF)
	$(TYPECHECK)

# The package with every extra, pinned; the Kafka broker's jars, fetched with Maven into
# ~/.cache/combe-test so the broker fixture starts without downloading (the fetch needs only the standard
# library, so it runs while uv installs: on a fresh machine both are downloads); Chromium for the explorer
# page test (Debian packages, needs root).
test-deps: | $(UV)
	@$(PY) -m tests.support.kafka_broker fetch & fetch=$$!; \
	$(MAKE) --no-print-directory $(VENV)/.test-deps; installed=$$?; \
	wait $$fetch && exit $$installed
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing chromium and chromium-driver (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# A venv that sees no system site-packages, so what the machine happens to have installed cannot leak in,
# with uv (pinned) to install into it: from empty caches it installs the pinned set in a fraction of the
# time and CPU pip takes (pip with -c constraints.txt installs the same set, only slower).
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --quiet uv==$(UV_VERSION)

# The build backend first (pinned), then the package built with it: --no-build-isolation keeps the
# installer from fetching an unpinned setuptools into a throwaway build env. A stamp file records the
# install; it is redone when a pin or a requirement changes.
$(VENV)/.test-deps: pyproject.toml $(CONSTRAINTS) | $(UV)
	$(UV_INSTALL) setuptools wheel
	$(UV_INSTALL) --no-build-isolation -e '.[test]'
	touch $@

$(VENV)/.base-deps: pyproject.toml $(CONSTRAINTS) | $(UV)
	$(UV_INSTALL) setuptools wheel
	$(UV_INSTALL) --no-build-isolation -e .
	touch $@

quickstart: $(VENV)/.base-deps
	$(PY) examples/quickstart.py

# The conformance corpus (docs/conformance/): written again by combe, deterministically. Run it when what combe
# writes changes on purpose, and commit the result with the change (tests/test_conformance.py compares).
corpus: $(VENV)/.test-deps
	$(PY) -m tests.support.corpus docs/conformance

# Re-resolve every pin: uv resolves the extras above from pyproject.toml alone, for the venv's Python,
# seeing no installed package (it installs nothing), in seconds where pip's resolver backtracks through
# boto3/botocore/aiobotocore for many minutes. Run it after changing a requirement in pyproject.toml and
# commit the result.
lock: | $(UV)
	@{ echo "# Every package of combe[$(LOCK_EXTRAS)], pinned. Generated by \`make lock\` (do not edit by hand)"; \
	  echo "# for $$($(PY) -V) on $$(uname -sm)."; \
	  $(UV) pip compile $(UV_OPTS) --no-header --no-annotate $(foreach extra,$(LOCK_EXTRAS),--extra $(extra)) pyproject.toml; \
	} > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@echo "wrote $(CONSTRAINTS): $$(grep -c '==' $(CONSTRAINTS)) pins"
