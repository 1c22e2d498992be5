#!/bin/bash
# Run once by the influxdb:2.7 image (from /docker-entrypoint-initdb.d), right after it
# created the org, the bucket and the admin user of an empty data volume, against a
# temporary server the influx CLI is already logged in to. It makes the bucket
# queryable with InfluxQL, which Grafana and `crampwatch dashboard` use:
#
# 1. a DBRP mapping: InfluxQL database "$DOCKER_INFLUXDB_INIT_BUCKET", retention
#    policy "autogen" (the default) -> the bucket;
# 2. a read-only v1 user ($INFLUX_READER_USER, password from the influx_reader_password
#    secret) for the readers, so none of them holds the admin token.
#
# To run it again on an existing volume, use the same commands with
# `docker compose exec influxdb ...` (docs/deployment.md).
set -euo pipefail

: "${DOCKER_INFLUXDB_INIT_ORG:?}" "${DOCKER_INFLUXDB_INIT_BUCKET:?}"
: "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?}" "${INFLUX_READER_USER:?}"
reader_password_file=${INFLUX_READER_PASSWORD_FILE:-/run/secrets/influx_reader_password}
reader_password=$(<"$reader_password_file")

influx v1 dbrp create \
    --org "$DOCKER_INFLUXDB_INIT_ORG" \
    --bucket-id "$DOCKER_INFLUXDB_INIT_BUCKET_ID" \
    --db "$DOCKER_INFLUXDB_INIT_BUCKET" \
    --rp autogen \
    --default

influx v1 auth create \
    --org "$DOCKER_INFLUXDB_INIT_ORG" \
    --username "$INFLUX_READER_USER" \
    --password "$reader_password" \
    --read-bucket "$DOCKER_INFLUXDB_INIT_BUCKET_ID" \
    --description "crampwatch readers (Grafana, night view, alerts): InfluxQL, read-only"

echo "crampwatch: DBRP ${DOCKER_INFLUXDB_INIT_BUCKET}/autogen and v1 user ${INFLUX_READER_USER} created"
