# syntax=docker/dockerfile:1
#
# aivcs-ledgerd in a slim image. The builder stage turns the client package,
# the daemon and every dependency into wheels; the runtime stage installs only
# those wheels, so no source tree, compiler or pip cache reaches the image.
# tests/test_dockerfile.py replays these steps without Docker.
#
#     docker build -t aivcs-ledgerd .
#     docker run -p 50051:50051 -v aivcs-ledger:/data aivcs-ledgerd

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY clients/python/ clients/python/
COPY pyproject.toml README.md ./
COPY server/ server/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels ./clients/python .

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --root-user-action=ignore --no-index --find-links /wheels aivcs-ledgerd
# A numeric, non-root user (Kubernetes' runAsNonRoot can only check numbers)
# owning the data folder; the folder is made before VOLUME so a new volume
# starts with this owner.
RUN groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid ledger --home-dir /data --no-create-home --shell /usr/sbin/nologin ledger \
    && mkdir /data \
    && chown ledger:ledger /data
VOLUME /data
WORKDIR /data
USER 10001:10001
ENV AIVCS_LEDGER_LISTEN=0.0.0.0:50051 \
    AIVCS_LEDGER_DB=surrealkv:///data/ledger
EXPOSE 50051
# Exec form: the daemon is PID 1 and gets SIGTERM itself; it installs its own
# handlers, drains in-flight calls and closes the database before exiting 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aivcs-ledgerd"]
