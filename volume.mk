# The simulated network volume (tests/support/slow_volume.py): a FUSE passthrough that delays
# every operation. Included from the Makefile (`include volume.mk`); uses its $(BIN) and .venv rule.
#
# It needs /dev/fuse (the kernel's), Debian's libfuse3 (>= 3.11: see the module's docstring)
# and fusermount (the fuse3 package), and mfusepy in the venv (in the test extras). Without
# /dev/fuse (a container started without it) the tests are skipped, except in CI (CI=true).
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: volume-deps

volume-deps: $(BIN)/marimo-orchestrator
	@if ! ldconfig -p | grep -q 'libfuse3\.so\.3' || ! command -v fusermount3 >/dev/null; then \
	  echo "volume-deps: no libfuse3 or fusermount3, installing fuse3 with apt-get"; \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends \
	    fuse3 libfuse3-3; \
	fi
	@command -v fusermount3 >/dev/null || { echo "volume-deps: fusermount3 is still missing" >&2; exit 1; }
	@$(BIN)/python -c "import os; os.environ['FUSE_LIBRARY_NAME'] = 'fuse3'; import mfusepy" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet 'mfusepy>=3.1'
