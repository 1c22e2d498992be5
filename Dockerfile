# The crampwatch image: every `crampwatch` command (gateway, record, alerts, dashboard,
# ...), run as an unprivileged user. Used by docker-compose.yml; docs/deployment.md.
#
#   docker build -t crampwatch:local .
#   docker run --rm crampwatch:local --help
FROM python:3.11-slim

# tzdata: nights are split in the local time zone (TZ); no compiler needed (wheels).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*

# Fixed ids, so named volumes keep their owner across rebuilds. The state and
# recording directories exist (owned by crampwatch) before volumes are mounted on
# them, so Docker creates the volumes with that owner.
RUN groupadd --system --gid 10001 crampwatch \
    && useradd --system --uid 10001 --gid crampwatch --home-dir /var/lib/crampwatch \
        --shell /usr/sbin/nologin crampwatch \
    && mkdir -p /var/lib/crampwatch/state /var/lib/crampwatch/recordings /etc/crampwatch \
    && chown -R crampwatch:crampwatch /var/lib/crampwatch

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sensor_gateway ./sensor_gateway
COPY firmware_sim ./firmware_sim
COPY signal ./signal
RUN pip install --no-cache-dir --disable-pip-version-check . \
    && cd / && rm -rf /src

WORKDIR /var/lib/crampwatch
USER crampwatch:crampwatch
ENV PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib

ENTRYPOINT ["crampwatch"]
CMD ["--help"]
