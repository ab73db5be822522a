# syntax=docker/dockerfile:1
# Companion's cloud side: one image for the Procfile's processes (web, worker, release).
#   docker build -t companion .
#   docker run companion                                   # web: gunicorn on :5000 (the default command)
#   docker run companion python -m companion.jobs.worker   # the scheduler worker (COMPANION_BIND=0.0.0.0 to
#                                                          # scrape its metrics on :9101 from outside the container)
#   docker run companion python -m companion.jobs.sender   # a sender (pushes only)
#   docker run companion python -m companion.cli migrate   # the release step: indexes as the code declares
# compose.yaml runs all three with MongoDB. Settings are environment variables (README, "Configuration").

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# The lock first, so that a change to the code alone reuses this layer. Every package is pinned with its
# hashes; pip refuses anything else.
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.txt

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COMPANION_ENV=production \
    PORT=5000
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin companion
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root gunicorn.conf.py Procfile pyproject.toml README.md ./
COPY --chown=root:root companion ./companion
USER companion
EXPOSE 5000 9101
# One probe for every process of the image: `companion healthcheck` reads which one the container runs (PID 1) and
# probes it: web its /healthz, a worker its heartbeat (worker-status --local), a sender the database, the release
# step nothing. (It probed /healthz whatever ran: a worker or sender container was reported unhealthy.)
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "-m", "companion.cli", "healthcheck"]
# The Procfile's web line, in exec form so that gunicorn gets SIGTERM and drains.
CMD ["sh", "-c", "exec gunicorn --workers ${WEB_CONCURRENCY:-2} --threads 4 --worker-class gthread --bind ${COMPANION_BIND:-0.0.0.0}:${PORT:-5000} companion.wsgi:app"]
