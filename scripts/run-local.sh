#!/usr/bin/env bash
# The whole system on this machine with demo data:
#   FerretDB (unless MONGODB_URI is set) -> indexes, demo data, mindfulness library ->
#   the local FCM emulator -> every process in the Procfile (web on :5000, worker) ->
#   simulated TENS units on a private D-Bus feeding a paired gateway.
# A process that exits is restarted, and says so; the others go on. Ctrl-C stops everything.
set -euo pipefail
# Everything this script writes (the secret keys, the database's files, mail with sign-up codes, logs) is for
# this user's eyes only.
umask 077
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh run
mkdir -p var/run var/ferretdb var/mail
chmod 700 var var/run var/ferretdb var/mail
# Listen on this machine only unless told otherwise: the demo's passwords are published in the README.
export COMPANION_BIND="${COMPANION_BIND:-127.0.0.1}"
export PATH="$root/.venv/bin:$PATH"
export PORT="${PORT:-5000}"
# Where this machine reaches what listens on COMPANION_BIND: a wildcard bind through its own loopback. The demo
# gateway speaks https, or plain http to this machine only (any other http URL is refused, exit 78): bound to
# another address alone (a LAN one), the API is not on loopback, and the gateway is not started.
gateway_api=
case "$COMPANION_BIND" in
  0.0.0.0) here=127.0.0.1 ;;
  "[::]") here="[::1]" ;;
  *) here="$COMPANION_BIND" ;;
esac
case "$here" in
  127.*|localhost|"[::1]") gateway_api="http://${here}:${PORT}" ;;
esac
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "==> stopping"
  # Each service runs in its own process group (setsid), so the whole pipeline goes, not just its last stage.
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Each service runs in its own process group (setsid) under scripts/supervise.sh, which prefixes its lines
# with its name and restarts it when it exits, saying so. Ctrl-C ends every group, supervisors included.
supervise() {
  setsid scripts/supervise.sh "$@" &
  pids+=($!)
}

[ -f var/dev-secret ] || python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > var/dev-secret
[ -f var/audit-key ] || python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > var/audit-key
chmod 600 var/dev-secret var/audit-key
export COMPANION_SECRET_KEY="${COMPANION_SECRET_KEY:-$(cat var/dev-secret)}"
export COMPANION_AUDIT_KEY="${COMPANION_AUDIT_KEY:-$(cat var/audit-key)}"
export COMPANION_AUDIT_ANCHOR_FILE="${COMPANION_AUDIT_ANCHOR_FILE:-$root/var/audit-anchors.log}"
export COMPANION_MAIL_DIR="${COMPANION_MAIL_DIR:-$root/var/mail}"

if [ -z "${MONGODB_URI:-}" ]; then
  # A new database means the demo gateway's old credentials are gone: pair it afresh.
  [ -d var/ferretdb ] && [ -n "$(ls -A var/ferretdb 2>/dev/null)" ] || rm -rf var/run/gateway
  db_port="${COMPANION_DB_PORT:-27117}"
  echo "==> starting FerretDB on 127.0.0.1:${db_port} (data in var/ferretdb)"
  supervise ferretdb var/bin/ferretdb --handler=sqlite --sqlite-url="file:$root/var/ferretdb/" \
    --listen-addr="127.0.0.1:${db_port}" --state-dir="$root/var/ferretdb" --telemetry=disable \
    --debug-addr=- --log-level=warn
  export MONGODB_URI="mongodb://127.0.0.1:${db_port}/"
  for _ in $(seq 1 100); do
    python -c "import pymongo,sys; pymongo.MongoClient('$MONGODB_URI', serverSelectionTimeoutMS=200).admin.command('ping')" \
      2>/dev/null && break
    sleep 0.2
  done
fi

echo "==> database: migrations (indexes), demo data, mindfulness library"
companion migrate
companion load-content
companion seed-demo

fcm_port="${COMPANION_FCM_PORT:-9099}"
echo "==> starting the local FCM emulator on http://127.0.0.1:${fcm_port}/ (see pushes arrive there)"
rm -f var/run/fcm-service-account.json
fcm_log_size=$(stat -c %s var/run/fcm.log 2>/dev/null || echo 0)
supervise fcm bash -c "exec python -m companion.notify.fcm_emulator --port $fcm_port \
  --write-service-account var/run/fcm-service-account.json >> var/run/fcm.log 2>&1"
# A port in use (COMPANION_FCM_PORT): the emulator's one line, and stop here rather than start a worker and a
# sender that wait for ever on a service-account file that never comes.
scripts/await-fcm.sh var/run/fcm-service-account.json var/run/fcm.log "$fcm_log_size" 30 || exit 1
export FCM_SERVICE_ACCOUNT="$root/var/run/fcm-service-account.json"
export FCM_URL="http://127.0.0.1:${fcm_port}/v1/projects/{project_id}/messages:send"

echo "==> starting the Procfile's processes (its release step, companion migrate, ran above)"
while IFS= read -r line; do
  [[ "$line" =~ ^([a-z]+):[[:space:]]*(.*)$ ]] || continue
  [ "${BASH_REMATCH[1]}" = release ] && continue
  supervise "${BASH_REMATCH[1]}" bash -c "${BASH_REMATCH[2]}"
done < Procfile

for _ in $(seq 1 100); do curl -fs "http://${here}:${PORT}/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

if [ -n "$gateway_api" ]; then
  echo "==> simulated TENS units -> gateway -> API"
  supervise gateway python -m device_gateway.demo --api "$gateway_api" --state-dir var/run/gateway
else
  echo "==> no demo gateway: it speaks https or plain http to this machine only, and the API listens on" \
    "${COMPANION_BIND} alone (COMPANION_BIND=0.0.0.0 serves the LAN and loopback both)"
fi

cat <<EOM

  Companion is running.
    API            http://${here}:${PORT}/api/v1   (docs: http://${here}:${PORT}/docs)
    Clinician web  http://${here}:${PORT}/clinician
    Push emulator  http://127.0.0.1:${fcm_port}/
    Metrics        http://${here}:${PORT}/metrics (web), http://${here}:${COMPANION_WORKER_METRICS_PORT:-9101}/ (worker)
    Email          var/mail/ (sign-up codes, one .eml file per message)
  Listening on ${COMPANION_BIND} only. Demo logins: see 'demo data' above (password: companion-demo).
  A process that exits is restarted, the others go on.
  Ctrl-C stops everything.

EOM
wait
