# Atelier: a slim image running `python -m bot` as a non-root user.
# The Python the lock files were compiled for (requirements/bot.txt).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/data \
    MALLOC_MMAP_THRESHOLD_=131072 \
    METRICS_PORT=9464 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
# setup.py compiles the message catalogs (bot/locales/*/LC_MESSAGES/*.po) into the installed package.
# The locked versions first (with their hashes, including the build's setuptools and Babel), then
# the package itself without resolving anything again.
COPY requirements/bot.txt ./requirements/bot.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/bot.txt
COPY pyproject.toml setup.py babel.cfg README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /app atelier \
    && mkdir -p /data && chown atelier /data

USER atelier
VOLUME ["/data"]
# SIGTERM starts a graceful shutdown; give it longer than SHUTDOWN_GRACE_SECONDS
# (docker stop -t 35, or stop_grace_period: 35s in compose).
STOPSIGNAL SIGTERM
# /healthz answers 200 while the gateway is connected and the database answers (no curl in a slim
# image: Python's urllib does it). /metrics and /healthz listen on 127.0.0.1:$METRICS_PORT inside the
# container; set METRICS_HOST=0.0.0.0 and publish the port to let Prometheus scrape from outside.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['METRICS_PORT'], timeout=5)"]
CMD ["python", "-m", "bot"]
