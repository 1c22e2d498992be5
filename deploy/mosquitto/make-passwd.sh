#!/bin/sh
# Writes Mosquitto's password file from secrets; run by the mosquitto-init service of
# docker-compose.yml before every start of the broker (so a changed or added secret
# takes effect with `docker compose up -d`), never committed anywhere.
#
# Every file  $MQTT_SECRETS_DIR/mqtt-user.<name>  (default /run/secrets) becomes the
# MQTT user <name> with the file's content (trailing newline dropped) as password.
# The new file replaces $MQTT_PASSWORD_FILE (default /mosquitto/auth/passwd) in one
# rename, mode 0600, owned by the broker's user when run as root.
set -eu

secrets_dir=${MQTT_SECRETS_DIR:-/run/secrets}
out=${MQTT_PASSWORD_FILE:-/mosquitto/auth/passwd}

umask 077
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT

count=0
for secret in "$secrets_dir"/mqtt-user.*; do
    [ -e "$secret" ] || break
    user=${secret##*/mqtt-user.}
    case $user in
        *[!A-Za-z0-9_.-]* | "")
            echo "make-passwd: bad user name '$user' (from $secret)" >&2
            exit 1 ;;
    esac
    password=$(cat "$secret")
    if [ ${#password} -lt 16 ]; then
        echo "make-passwd: the password of MQTT user '$user' is shorter than 16 characters;" \
             "generate one with: openssl rand -hex 32" >&2
        exit 1
    fi
    # -b takes the password as an argument: visible to this one-shot container only.
    mosquitto_passwd -b "$tmp" "$user" "$password"
    count=$((count + 1))
done
if [ "$count" -eq 0 ]; then
    echo "make-passwd: no $secrets_dir/mqtt-user.* secrets; refusing to start a broker nobody can use" >&2
    exit 1
fi

if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chown mosquitto:mosquitto "$tmp"
fi
chmod 0600 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "make-passwd: $count MQTT users written to $out"
