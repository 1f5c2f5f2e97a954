# marimo-orchestrator: the base image users build on with their notebooks and requirements.txt
# (see examples/quix/). `podman build -t marimo-orchestrator .` or `docker build ...`.
#
# BASE_IMAGE is any Debian-like image with Python >= 3.11 and pip; the container tests build on a
# local Debian bookworm base because no registry can be reached there (tests/container/).
ARG BASE_IMAGE=python:3.13-slim
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MARIMO_SKIP_UPDATE_CHECK=1 \
    ORCHESTRATOR_HOST=0.0.0.0 \
    ORCHESTRATOR_PORT=8080

# tini runs as PID 1: it forwards SIGTERM/SIGINT to the orchestrator (which ends marimo's whole
# process tree and exits 0) and reaps any orphan that gets re-parented to PID 1, so neither
# `podman run --init` nor `docker run --init` is needed. setpriv (util-linux, always present)
# drops root in the entry point; the check makes a base without it fail here, not at run time.
# The image's user `marimo` (1000:1000) owns /app; see docker/entrypoint.sh for volumes owned
# by someone else. marimo itself (notebook code) runs as `notebook` (1001), in the orchestrator's
# group, so that it cannot read the orchestrator's secrets.
# Versions are those of the base's Debian release: pinning them would break every other base.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && setpriv --version >/dev/null \
    && useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin marimo \
    && useradd --create-home --uid 1001 --user-group --shell /usr/sbin/nologin notebook

WORKDIR /opt/marimo-orchestrator

# Dependencies in their own layer: it changes only with pyproject.toml, so rebuilding after a
# code change downloads nothing. uv comes in as a dependency (the orchestrator's installer).
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" >/tmp/requirements.txt \
    && python3 -m pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY orchestrator ./orchestrator
COPY jobs ./jobs
COPY proxy ./proxy
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && marimo-orchestrator --help >/dev/null \
    && python3 -m marimo --version \
    && uv --version

COPY docker/entrypoint.sh /usr/local/bin/marimo-orchestrator-entrypoint

# Notebooks live in /app; the state volume is mounted at /app/state (Quix's default; the
# orchestrator follows $Quix__Deployment__State__Path wherever Quix puts it).
WORKDIR /app
RUN chmod 0755 /usr/local/bin/marimo-orchestrator-entrypoint \
    && install -d -o marimo -g marimo /app/state \
    && chown marimo:marimo /app

EXPOSE 8080

# Liveness only: /-/healthy answers 200 from the first second, also while requirements install
# (readiness is /-/ready). Follows ORCHESTRATOR_PORT when that is changed.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/-/healthy' % os.environ.get('ORCHESTRATOR_PORT', '8080'), timeout=2)"]

# No USER: the container starts as root only for the entry point to adapt to the state volume's
# owner, then runs the orchestrator (and so marimo) unprivileged. Starting it as non-root directly
# (`--user 1000`, Kubernetes runAsUser with fsGroup) works too; see deploy/kubernetes.yaml.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/marimo-orchestrator-entrypoint"]
CMD ["/app"]
