# recalled-lite: one process, one SQLite file under /data.
FROM python:3.11-slim

RUN useradd --system --uid 10001 --create-home --home-dir /home/recalled recalled \
 && mkdir -p /data && chown recalled:recalled /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY recalled_lite ./recalled_lite
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER recalled
VOLUME ["/data"]
EXPOSE 8080
# The secret file is created beside the database, inside the volume: back up /data whole.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
CMD ["recalled-lite", "serve", "--host", "0.0.0.0", "--db", "/data/recalled.db"]
