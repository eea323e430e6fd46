#!/usr/bin/env bash
# bench/edge.sh — what the referral module costs at the edge.
#
# Starts one redis-server and one nginx (worker_processes 1) with
# build/ngx_http_referral_module.so on free loopback ports, in a temporary
# directory removed on exit, and runs wrk against three locations:
#
#   plain   `return 200` with referral off
#   nocode  `return 200` with referral on, no code, no cookie
#   click   referral on, `?ref=CODE`, no cookie: every request is a new
#           visitor, a Set-Cookie and an XADD
#
# It prints requests/s for each, in BENCH_ROUNDS (3) back-to-back rounds,
# the CPU time the nginx worker spent per request (utime + stime from
# /proc/PID/stat, before and after each wrk run, over the requests wrk
# counted) and, for click, redis-server's CPU time per click, so that the
# module's own cost shows apart from Redis sharing the same cores (a click
# run is measured until the module's queue has drained into Redis),
# the ratios click/plain and nocode/plain per round and their medians,
# and how many click events reached Redis (XLEN once the module's queue has
# drained) against the requests wrk counted ("N requests in"; wrk counts
# completed requests, so up to one request per connection may be served
# but not counted: events can exceed the count by that much, never fall
# short of it).
#
# Usage: bench/edge.sh            (from anywhere; uses the repo's build/)
# Environment: BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_THREADS (1),
#              BENCH_SPOOL (on; off: no referral_spool, so no journal either),
#              REFERRAL_NGINX (the nginx binary, /usr/sbin/nginx) and
#              REFERRAL_MODULE (the .so built for it), as the tests take them:
#   REFERRAL_NGINX=build-nginx/1.30.4/nginx-1.30.4/objs/nginx \
#   REFERRAL_MODULE=build-nginx/1.30.4/nginx-1.30.4/objs/ngx_http_referral_module.so bench/edge.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=${REFERRAL_MODULE:-$ROOT/build/ngx_http_referral_module.so}
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
NGINX=${REFERRAL_NGINX:-/usr/sbin/nginx}
CODE=bench_code_42
SPOOL=${BENCH_SPOOL:-on}

for tool in wrk redis-server redis-cli pgrep "$NGINX"; do
  command -v "$tool" >/dev/null || { echo "edge.sh: $tool is missing (./build.sh installs it)" >&2; exit 1; }
done
[ -f "$MODULE" ] || { echo "edge.sh: $MODULE is missing: run ./build.sh first" >&2; exit 1; }

TMP=$(mktemp -d /tmp/referral-bench.XXXXXX)
chmod 777 "$TMP"                       # nginx workers run as nobody under root
mkdir -m 777 "$TMP/spool" "$TMP/logs"
NGINX_PID=""
REDIS_PID=""

cleanup() {
  if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NGINX_PID" 2>/dev/null || true
  fi
  if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "edge.sh: nothing listens on port $1" >&2
  return 1
}

REDIS_PORT=$(free_port)
HTTP_PORT=$(free_port)

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$TMP" --daemonize no --logfile "$TMP/redis.log" &
REDIS_PID=$!
wait_port "$REDIS_PORT"
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

head -c 48 /dev/urandom > "$TMP/key"
cat > "$TMP/nginx.conf" <<EOF
load_module $MODULE;
daemon off;
master_process on;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;

    referral_redis 127.0.0.1:$REDIS_PORT;
    referral_secret $TMP/key;
    referral_spool $([ "$SPOOL" = off ] && echo off || echo "$TMP/spool");

    server {
        listen 127.0.0.1:$HTTP_PORT reuseport backlog=4096;
        location = /plain  { return 200 "ok\n"; }
        location = /nocode { referral on; return 200 "ok\n"; }
        location = /click  { referral on; return 200 "ok\n"; }
        location = /status { referral_status; }
    }
}
EOF

"$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/logs/error.log" -t -q
"$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/logs/error.log" &
NGINX_PID=$!
wait_port "$HTTP_PORT"

# sanity: the click location really attributes and sets a cookie
if ! curl -s -o /dev/null -D - "http://127.0.0.1:$HTTP_PORT/click?ref=$CODE" | grep -qi '^set-cookie: referral='; then
  echo "edge.sh: /click did not set the referral cookie" >&2
  exit 1
fi
status() { curl -s "http://127.0.0.1:$HTTP_PORT/status"; }
# Every event the module took is in Redis: nothing in memory, nothing
# spooled that was not replayed.
drained() {
  status | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin)
sys.exit(0 if s["buffered"] == 0 and s["spooled"] == s["replayed"] else 1)'
}
settle() { for _ in $(seq 300); do drained && return 0; sleep 0.1; done; echo "edge.sh: the queue did not drain" >&2; return 1; }

WORKER_PID=$(pgrep -P "$NGINX_PID" | head -n 1)
[ -n "$WORKER_PID" ] || { echo "edge.sh: no nginx worker" >&2; exit 1; }
CLK_TCK=$(getconf CLK_TCK)
# utime + stime of a process, in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the ")" that ends the command name).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

warm() { wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$1" >/dev/null; }

# run NAME URL -> sets RPS_<NAME>, REQS_<NAME>, NGX_US_<NAME> (the worker's
# CPU microseconds per request) and, for click, REDIS_US_click; prints them
run() {
  local name=$1 url=$2 out
  local ngx0 redis0 ngx1 redis1
  ngx0=$(cpu_ticks "$WORKER_PID"); redis0=$(cpu_ticks "$REDIS_PID")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$url")
  [ "$name" != click ] || settle  # the XADDs of this run belong to it
  ngx1=$(cpu_ticks "$WORKER_PID"); redis1=$(cpu_ticks "$REDIS_PID")
  local rps reqs errors non2xx ngx_us redis_us
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  reqs=$(awk '/ requests in / {print $1}' <<<"$out")
  errors=$(grep -E '^ *Socket errors:' <<<"$out" || true)
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
  ngx_us=$(awk -v d=$((ngx1 - ngx0)) -v t="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.2f", d / t * 1e6 / n}')
  redis_us=$(awk -v d=$((redis1 - redis0)) -v t="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.2f", d / t * 1e6 / n}')
  printf '%-7s %12s req/s   nginx worker %6s us CPU/req%s   (%s requests in %s%s%s)\n' \
    "$name" "$rps" "$ngx_us" "$([ "$name" = click ] && printf ', redis %s us CPU/click' "$redis_us")" \
    "$reqs" "$DURATION" "${non2xx:+, non-2xx: $non2xx}" "${errors:+, ${errors# }}"
  printf -v "RPS_$name" '%s' "$rps"
  printf -v "REQS_$name" '%s' "$reqs"
  printf -v "NGX_US_$name" '%s' "$ngx_us"
  printf -v "REDIS_US_$name" '%s' "$redis_us"
}

echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') ($NGINX), 1 worker, spool and journal $SPOOL; wrk -t$THREADS -c$CONNECTIONS -d$DURATION on loopback; $(nproc) CPUs"
# A shared VM's speed drifts from one minute to the next: the three
# configurations are measured back to back, ROUNDS times, and the ratios
# are taken within each round; the medians are the result.
ROUNDS=${BENCH_ROUNDS:-3}
RATIOS=()
for round in $(seq "$ROUNDS"); do
  echo "-- round $round"
  warm "http://127.0.0.1:$HTTP_PORT/plain"
  run plain  "http://127.0.0.1:$HTTP_PORT/plain"
  warm "http://127.0.0.1:$HTTP_PORT/nocode"
  run nocode "http://127.0.0.1:$HTTP_PORT/nocode"
  warm "http://127.0.0.1:$HTTP_PORT/click?ref=$CODE"
  settle
  run click "http://127.0.0.1:$HTTP_PORT/click?ref=$CODE"
  RATIOS+=("$RPS_plain $RPS_nocode $RPS_click $NGX_US_plain $NGX_US_nocode $NGX_US_click $REDIS_US_click")
done
/usr/bin/python3 - "${RATIOS[@]}" <<'EOF'
import statistics, sys
rounds = [tuple(map(float, r.split())) for r in sys.argv[1:]]
click = [r[2] / r[0] for r in rounds]
nocode = [r[1] / r[0] for r in rounds]
med = lambda i: statistics.median(r[i] for r in rounds)
print()
print("click/plain  per round: " + "  ".join(f"{r:.3f}" for r in click) +
      f"   median {statistics.median(click):.3f}   (aim >= 0.60)")
print("nocode/plain per round: " + "  ".join(f"{r:.3f}" for r in nocode) +
      f"   median {statistics.median(nocode):.3f}   (aim >= 0.97)")
print(f"nginx worker CPU per request, medians: plain {med(3):.2f} us, nocode {med(4):.2f} us, "
      f"click {med(5):.2f} us (the module's own: nocode +{med(4) - med(3):.2f} us, "
      f"click +{med(5) - med(3):.2f} us over plain)")
print(f"redis-server CPU per click, median: {med(6):.2f} us")
EOF
echo
echo "-- click accounting run"

# the click run starts from an empty stream once the warm-up has drained
warm "http://127.0.0.1:$HTTP_PORT/click?ref=$CODE"
settle
rcli DEL referral:events >/dev/null
BEFORE=$(status)
run click "http://127.0.0.1:$HTTP_PORT/click?ref=$CODE"

# wait for the module's queue (memory, then spool) to reach Redis
last=-1
for _ in $(seq 600); do
  n=$(rcli XLEN referral:events)
  if drained && [ "$n" = "$last" ]; then break; fi
  last=$n
  sleep 0.2
done
EVENTS=$(rcli XLEN referral:events)
AFTER=$(status)

/usr/bin/python3 - "$RPS_plain" "$RPS_nocode" "$RPS_click" "$REQS_click" "$EVENTS" \
  "$CONNECTIONS" "$BEFORE" "$AFTER" <<'EOF'
import json, sys
plain, nocode, click = map(float, sys.argv[1:4])
reqs, events, conns = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
before, after = json.loads(sys.argv[7]), json.loads(sys.argv[8])
lost = max(0, reqs - events)
extra = events - reqs
print(f"click events in Redis: {events} for {reqs} requests counted by wrk "
      f"({'+' if extra >= 0 else ''}{extra}; lost: {lost}"
      f"{'; wrk leaves up to %d in flight' % conns if 0 < extra <= conns else ''})")
delta = {k: after[k] - before[k] for k in ("sent", "spooled", "replayed", "dropped")}
print("referral_status during the click run: " +
      ", ".join(f"{k} +{v}" for k, v in delta.items()) + f", redis {after['redis']}")
if lost or delta["dropped"]:
    print("LOST EVENTS")
    sys.exit(1)
EOF
bad=$(grep -E '\[(alert|emerg|crit)\]|AddressSanitizer|runtime error' "$TMP/logs/error.log" || true)
if [ -n "$bad" ]; then
  echo "error.log:"; echo "$bad" | head -20
  exit 1
fi
