# Browser tests (tests/browser/): Playwright for Python driving the system's Chromium.
# Included from the Makefile (`include browser.mk`); uses its $(BIN) and .venv rule.
#
# The tests run headless, so they use Debian's chromium-headless-shell: the same Blink and V8
# as the chromium package without the desktop browser around them (what Playwright itself runs
# for headless tests). It spends about a third less CPU per editor load (bench/RESULTS.md,
# "The test suite"); `make test CHROMIUM=/usr/bin/chromium` runs them in the full browser.
# The tests of a cross-site frame (tests/browser/test_quix.py) always use the full browser
# ($(FULL_CHROMIUM)): they need its default of blocking third-party cookies, which the shell
# lacks. So both are installed.
#
# Playwright never downloads a browser here: the tests launch $(CHROMIUM) themselves, and
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD is set for every pip install this file makes.
# In CI (CI=true) a missing browser fails the browser tests instead of skipping them.
CHROMIUM ?= /usr/bin/chromium-headless-shell
FULL_CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export BROWSER_TESTS_CHROMIUM := $(CHROMIUM)
export BROWSER_TESTS_FULL_CHROMIUM := $(FULL_CHROMIUM)

.PHONY: browser-deps test-browser

# Debian's Chromium (apt-get update first: a fresh machine has no package lists), and the
# playwright package in the venv (it is in the test extras; installed here if missing).
browser-deps: $(BIN)/marimo-orchestrator
	@if [ ! -x "$(CHROMIUM)" ] || [ ! -x "$(FULL_CHROMIUM)" ]; then \
	  echo "browser-deps: installing chromium and chromium-headless-shell with apt-get"; \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends \
	    chromium chromium-headless-shell fonts-liberation; \
	fi
	@for browser in "$(CHROMIUM)" "$(FULL_CHROMIUM)"; do \
	  test -x "$$browser" || { echo "browser-deps: $$browser is still missing" >&2; exit 1; }; \
	done
	@$(BIN)/python -c "import playwright.sync_api" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet 'playwright>=1.40'

# Only the browser tests (make test runs them too: pytest collects tests/browser).
test-browser: browser-deps
	$(BIN)/python -m pytest -q tests/browser
