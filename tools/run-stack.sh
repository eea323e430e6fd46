#!/usr/bin/env bash
# The whole stack in the foreground on 127.0.0.1: redis-server, Debian's
# nginx with the module on :8080 (nginx.conf.example, with its demo
# application on :8081) and referral-worker on SQLite. Ctrl-C stops it all.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$ROOT/run
DB="sqlite://$RUN/referral.db"
mkdir -p "$RUN/tmp" "$RUN/redis"
chmod 755 "$RUN"
[ -s "$RUN/referral.key" ] || (umask 077 && head -c 48 /dev/urandom > "$RUN/referral.key")

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  kill -QUIT "$(cat "$RUN/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

if redis-cli -p 6379 ping >/dev/null 2>&1; then
  echo "using the Redis already listening on 127.0.0.1:6379"
else
  redis-server --port 6379 --bind 127.0.0.1 --dir "$RUN/redis" --daemonize no \
    --logfile "$RUN/redis.log" & pids+=($!)
  for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

"$ROOT/build/referralctl" --database "$DB" migrate
nginx -p "$ROOT" -c nginx.conf.example -t -q
nginx -p "$ROOT" -c nginx.conf.example -g 'daemon off;' & pids+=($!)
"$ROOT/build/referral-worker" --database "$DB" --redis redis://127.0.0.1:6379 \
  2>>"$RUN/worker.log" & pids+=($!)
sleep 1

CTL="build/referralctl --database $DB"
cat <<MSG

The stack is up: nginx on http://127.0.0.1:8080, Redis on 6379, the worker
writing to run/referral.db (logs in run/). In another terminal, from
$ROOT:

  # alice's sharing link
  CODE=\$($CTL code create --user alice)
  # bob follows it (the cookie jar plays bob's browser), then signs up
  curl -si -c run/bob.jar "http://127.0.0.1:8080/r/\$CODE" | grep -i set-cookie
  curl -s -b run/bob.jar "http://127.0.0.1:8080/signup?user=bob"
  sleep 2; $CTL rewards --user alice     # 7 extra trial days (alice is free)
  # alice pays; carol follows the link and subscribes: \$10 each
  curl -s "http://127.0.0.1:8080/subscribe?user=alice"
  curl -s -c run/carol.jar "http://127.0.0.1:8080/?ref=\$CODE" >/dev/null
  curl -s -b run/carol.jar "http://127.0.0.1:8080/signup?user=carol"
  curl -s -b run/carol.jar "http://127.0.0.1:8080/subscribe?user=carol"
  sleep 2; $CTL rewards --user alice; $CTL stats
  curl -s http://127.0.0.1:8080/referral/status

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
