# Browser tests (tests/browser/): Playwright for Python driving the system's Chromium.
# Included from the Makefile (`include browser.mk`); uses its $(BIN) and .venv rule.
#
# Playwright never downloads a browser here: the tests launch $(CHROMIUM) themselves, and
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD is set for every pip install this file makes.
# In CI (CI=true) a missing browser fails the browser tests instead of skipping them.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export BROWSER_TESTS_CHROMIUM := $(CHROMIUM)

.PHONY: browser-deps test-browser

# Debian's chromium (apt-get update first: a fresh machine has no package lists), and the
# playwright package in the venv (it is in the test extras; installed here if missing).
browser-deps: $(BIN)/marimo-orchestrator
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  echo "browser-deps: no $(CHROMIUM), installing chromium with apt-get"; \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends \
	    chromium fonts-liberation; \
	fi
	@test -x "$(CHROMIUM)" || { echo "browser-deps: $(CHROMIUM) is still missing" >&2; exit 1; }
	@$(BIN)/python -c "import playwright.sync_api" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet 'playwright>=1.40'

# Only the browser tests (make test runs them too: pytest collects tests/browser).
test-browser: browser-deps
	$(BIN)/python -m pytest -q tests/browser
