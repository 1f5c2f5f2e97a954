# marimo-orchestrator image: users build on it with their notebook and requirements.
# A later issue builds and runs this for real with podman; this is the first version.
ARG BASE_IMAGE=python:3.13-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MARIMO_SKIP_UPDATE_CHECK=1 \
    ORCHESTRATOR_HOST=0.0.0.0 \
    ORCHESTRATOR_PORT=8080

WORKDIR /opt/marimo-orchestrator
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY jobs ./jobs
COPY proxy ./proxy
RUN python -m pip install --no-cache-dir . && useradd --create-home --uid 1000 marimo

WORKDIR /app
RUN mkdir -p /app/state && chown marimo:marimo /app /app/state
USER marimo
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/-/healthy', timeout=2).status != 200)"
ENTRYPOINT ["marimo-orchestrator"]
CMD ["/app"]
