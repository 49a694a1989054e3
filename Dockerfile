# recalled-lite: one process, one SQLite file under /data.
# The dependencies come from the pinned, hashed lock (requirements/runtime.txt, the same file
# `make serve` installs), then the project itself with --no-deps: the image holds exactly
# the locked versions, and a tampered or substituted wheel fails the hash check.
FROM python:3.11-slim

RUN useradd --system --uid 10001 --create-home --home-dir /home/recalled recalled \
 && mkdir -p /data && chown recalled:recalled /data

WORKDIR /app
# Locks first: this layer is rebuilt only when they change, not at every code change.
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY recalled_lite ./recalled_lite
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && rm -rf /root/.cache build

USER recalled
VOLUME ["/data"]
EXPOSE 8080
# The secret file and the lock are created beside the database, inside the volume: back up
# /data whole (the lock file needs no backup).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
# SIGTERM (docker stop) is the graceful path; give it more than server.graceful_shutdown_seconds
# (30 s): docker stop --time 45.
STOPSIGNAL SIGTERM
CMD ["recalled-lite", "serve", "--host", "0.0.0.0", "--db", "/data/recalled.db"]
