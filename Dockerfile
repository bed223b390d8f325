# syntax=docker/dockerfile:1
#
# The one image of the cluster-side components, as in the original Telepresence: the
# traffic-manager runs it with its default command, the traffic-agent with `agent`.
#
#   docker build -t ghcr.io/telepresenceio/tel2:0.1.0 .
#   docker run --rm ghcr.io/telepresenceio/tel2:0.1.0          # python -m manager
#   docker run --rm ghcr.io/telepresenceio/tel2:0.1.0 agent    # python -m agent
#
# The builder installs the project and its locked runtime dependencies (uv.lock, no dev
# groups) into /app/.venv as a regular, non-editable install; the runtime stage copies only
# that environment. Both stages use the same base image, so the venv's interpreter path
# (/usr/local/bin/python3.12) exists in the runtime stage too.

ARG PYTHON_IMAGE=python:3.12-slim
# Keep in step with the uv that writes uv.lock.
ARG UV_VERSION=0.13.8

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /uvx /bin/
# Compile bytecode at build time: the runtime's root filesystem may be read-only. Copy rather
# than hard-link out of the cache mount, which is gone after the build. Use the image's Python,
# never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.12 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra speed --no-install-project

# Then the project itself. The wheel embeds the Helm chart, and hatchling needs the README.
COPY README.md ./
COPY telepresence ./telepresence
COPY manager ./manager
COPY agent ./agent
COPY helm ./helm
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra speed


FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="telepresence" \
      org.opencontainers.image.description="Telepresence (Python): the traffic-manager and traffic-agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The user the chart's securityContext expects (runAsNonRoot, runAsUser 1000).
RUN groupadd --gid 1000 telepresence \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin telepresence

# Owned by root and read-only to the user: the running process cannot change its own code.
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
# Numeric, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 1000:1000

ENTRYPOINT ["python", "-m"]
CMD ["manager"]
