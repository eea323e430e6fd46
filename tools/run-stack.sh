#!/usr/bin/env bash
# The whole stack in the foreground on 127.0.0.1: redis-server, Debian's
# nginx with the module on :8080 (nginx.conf.example, with its demo
# application on :8081), referral-worker on SQLite and `referralctl serve`
# (API and dashboard) on :8082. Ctrl-C stops it all.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$ROOT/run
DB="sqlite://$RUN/referral.db"
mkdir -p "$RUN/tmp" "$RUN/redis"
chmod 755 "$RUN"
[ -s "$RUN/referral.key" ] || (umask 077 && head -c 48 /dev/urandom > "$RUN/referral.key")
# The API token, and the demo proxy's header that carries it (nginx.conf.example).
[ -s "$RUN/api.token" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/api.token")
TOKEN=$(cat "$RUN/api.token")
(umask 077 && printf 'proxy_set_header Authorization "Bearer %s";\n' "$TOKEN" > "$RUN/api-auth.conf")
# One config for the worker and referralctl: sharing links point at nginx.
cat > "$RUN/referral.toml" <<TOML
redis = "redis://127.0.0.1:6379"
database = "$DB"
link_base = "http://127.0.0.1:8080/r/"
TOML

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
"$ROOT/build/referral-worker" --config "$RUN/referral.toml" \
  2>>"$RUN/worker.log" & pids+=($!)
"$ROOT/build/referralctl" --config "$RUN/referral.toml" serve --listen 127.0.0.1:8082 \
  --token-file "$RUN/api.token" 2>>"$RUN/serve.log" & pids+=($!)
sleep 1

CTL="build/referralctl --config run/referral.toml"
cat <<MSG

The stack is up: nginx on http://127.0.0.1:8080, Redis on 6379, the worker
writing to run/referral.db (logs in run/), and referralctl serve on
http://127.0.0.1:8082 with the API token $TOKEN
(run/api.token).

  Dashboard:    http://127.0.0.1:8082/   (any user name, the token as password)
  Invite page:  http://127.0.0.1:8080/invite?user=alice   (the demo's, linked from http://127.0.0.1:8080/)
  API:          curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8082/v1/users/alice

In another terminal, from $ROOT:

  # alice's sharing code (the link follows on the second line)
  CODE=\$($CTL code create --user alice | head -1)
  # bob follows it (the cookie jar plays bob's browser, consent=yes his
  # answer to the consent banner: nginx.conf.example skips visitors without it),
  # then signs up
  curl -si -c run/bob.jar -b consent=yes "http://127.0.0.1:8080/r/\$CODE" | grep -i set-cookie
  curl -s -b run/bob.jar "http://127.0.0.1:8080/signup?user=bob"
  sleep 2; $CTL rewards --user alice     # 7 extra trial days (alice is free)
  # alice pays; carol follows the link and subscribes: \$10 each
  curl -s "http://127.0.0.1:8080/subscribe?user=alice"
  curl -s -c run/carol.jar -b consent=yes "http://127.0.0.1:8080/?ref=\$CODE" >/dev/null
  curl -s -b run/carol.jar "http://127.0.0.1:8080/signup?user=carol"
  curl -s -b run/carol.jar "http://127.0.0.1:8080/subscribe?user=carol"
  sleep 2; $CTL rewards --user alice; $CTL stats
  curl -s http://127.0.0.1:8080/referral/status
  # then open the invite page and the dashboard above

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
