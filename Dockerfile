# syntax=docker/dockerfile:1
#
# One image per mlcp service, the service chosen by a build argument:
#
#   docker build --build-arg SERVICE=registry -t mlcp/registry .
#
# SERVICE is one of registry, trainer, gatekeeper, monitor, notifier (docker-compose.yml builds all
# five). The image installs only that service and its locked dependencies, runs `mlcp-<SERVICE>`
# (the same as `python -m mlcp.<SERVICE>`) as an unprivileged user, and reports health from the
# service's /healthz. Configuration is the usual MLCP_* environment (README.md, Configuration).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# The workspace manifests alone (root and member pyproject.toml files, uv.lock). BuildKit caches the
# COPY out of this stage by content, so the dependency layer below is rebuilt when a manifest or the
# lock changes, not on every source edit — and no member has to be listed here by hand.
FROM ${PYTHON_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN find . -type f ! -name pyproject.toml ! -name uv.lock -delete \
 && find . -mindepth 1 -type d -empty -delete

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN test -n "${SERVICE}" \
 || { echo "build with --build-arg SERVICE=<registry|trainer|gatekeeper|monitor|notifier>" >&2; exit 1; }
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Third-party dependencies of this one service, exactly as locked (--locked also fails the build
# when uv.lock is stale against a pyproject.toml).
COPY --from=manifests /src/ ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package "mlcp-${SERVICE}"

# The workspace packages themselves. They stay editable installs (pointing at /app/libs and
# /app/services) on purpose: the runtime finds a service's migrations/ folder beside its source
# tree (mlcp.runtime.migrations.service_migrations_dir), which a wheel install would not carry.
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --package "mlcp-${SERVICE}"

# Fail the build on a SERVICE that is not a runnable mlcp package; record its default port for the
# healthcheck; precompile the sources (they are read-only to the runtime user); name the entry point.
RUN /app/.venv/bin/python -c "import importlib, os; name = 'mlcp.' + os.environ['SERVICE']; importlib.import_module(name + '.__main__'); print(importlib.import_module(name + '.app').DEFAULT_PORT)" > /app/default-port \
 && /app/.venv/bin/python -m compileall -q /app/libs /app/services \
 && test -x "/app/.venv/bin/mlcp-${SERVICE}" \
 && ln -s "mlcp-${SERVICE}" /app/.venv/bin/mlcp-service

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="mlcp-${SERVICE}" \
      org.opencontainers.image.description="mlcp ${SERVICE} service" \
      io.mlcp.service="${SERVICE}"

RUN groupadd --system --gid 10001 mlcp \
 && useradd --system --uid 10001 --gid mlcp --home-dir /home/mlcp --create-home \
      --shell /usr/sbin/nologin mlcp \
 && mkdir -p /var/lib/mlcp/artifacts /var/lib/mlcp/audit /etc/mlcp \
 && chown mlcp:mlcp /var/lib/mlcp/artifacts \
 && chown mlcp:mlcp /var/lib/mlcp/audit && chmod 700 /var/lib/mlcp/audit

# Code and virtualenv stay owned by root: the service cannot rewrite itself.
COPY --from=build /app /app
COPY deploy/docker/healthcheck.py /usr/local/lib/mlcp/healthcheck.py

# A container listens on every interface by default (the host side decides what is published).
# A named volume mounted on /var/lib/mlcp/artifacts (or /audit) starts with this directory's
# ownership.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLCP_HTTP_HOST=0.0.0.0 \
    MLCP_ARTIFACT_ROOT=/var/lib/mlcp/artifacts

USER 10001:10001
WORKDIR /home/mlcp

# Standard library only, so the base interpreter runs it (-I: ignore PYTHON* variables and cwd).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/python3", "-I", "/usr/local/lib/mlcp/healthcheck.py"]

# The service handles SIGTERM itself: it stops consuming, publishes what is pending, then exits.
STOPSIGNAL SIGTERM
# `docker run <image> python -m mlcp.<SERVICE>` works too (the venv is first on PATH).
CMD ["/app/.venv/bin/mlcp-service"]
