# `make test` is the README's test command and what CI runs: it installs
# everything the suite needs on a fresh machine, then runs every test.
PYTHON ?= python3

.PHONY: test test-deps quickstart

test: test-deps
	$(PYTHON) -m pytest

# The package with every extra; Chromium for the explorer page test (Debian
# packages, needs root); the Kafka broker's jars, fetched with Maven into
# ~/.cache/combe-test so the broker fixture starts without downloading.
test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing chromium and chromium-driver (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi
	$(PYTHON) -m tests.support.kafka_broker fetch

quickstart:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check .
	$(PYTHON) examples/quickstart.py
