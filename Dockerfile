# Atelier: a slim image running `python -m bot` as a non-root user.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/data \
    MALLOC_MMAP_THRESHOLD_=131072

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app atelier \
    && mkdir -p /data && chown atelier /data

USER atelier
VOLUME ["/data"]
# SIGTERM starts a graceful shutdown; give it longer than SHUTDOWN_GRACE_SECONDS
# (docker stop -t 35, or stop_grace_period: 35s in compose).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
