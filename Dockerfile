# syntax=docker/dockerfile:1
# Build stage: install creditwatch and its dependencies into a virtualenv.
FROM python:3.11-slim AS build
RUN python -m venv /opt/creditwatch
ENV PATH=/opt/creditwatch/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY clients ./clients
COPY migrations ./migrations
COPY models ./models
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir .

# Runtime stage: just the virtualenv, run as an unprivileged user.
FROM python:3.11-slim
RUN groupadd --system creditwatch \
    && useradd --system --gid creditwatch --home-dir /var/lib/creditwatch --create-home creditwatch
COPY --from=build /opt/creditwatch /opt/creditwatch
ENV PATH=/opt/creditwatch/bin:$PATH \
    CREDITWATCH_PORT=50051 \
    CREDITWATCH_DATA_DIR=/var/lib/creditwatch \
    CREDITWATCH_LOG_FORMAT=json
USER creditwatch
WORKDIR /var/lib/creditwatch
EXPOSE 50051
# Set DATABASE_URL in production; without it an embedded PostgreSQL keeps its
# data in /var/lib/creditwatch (mount a volume there).
# The probe checks 127.0.0.1 on CREDITWATCH_PORT (set the port there, not with
# `serve --port`, and keep CREDITWATCH_HOST covering loopback). With TLS on, give it the CA
# that signed the server's certificate: CREDITWATCH_HEALTH_CA_FILE (and, for
# mutual TLS, CREDITWATCH_HEALTH_CERT_FILE and _KEY_FILE; for a certificate not
# issued to 127.0.0.1, CREDITWATCH_HEALTH_SERVER_NAME).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD creditwatch health || exit 1
ENTRYPOINT ["creditwatch"]
CMD ["serve"]
