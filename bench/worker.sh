#!/usr/bin/env bash
# bench/worker.sh — how fast referral-worker drains click events.
#
# Fills a fresh Redis stream with 10 000, 100 000 and 1 000 000 click events
# for one known code (fields exactly as the module writes them), then times
# `referral-worker --once` draining them into SQLite and into PostgreSQL
# (each run with a fresh database and a consumer group of its own, so one
# fill serves every run). Prints events/s per size so the growth of the
# per-event cost is visible, for the default batch (500) and a larger one.
#
#   bench/worker.sh [SIZE...]          (default: 10000 100000 1000000)
#   REFERRAL_BUILD_DIR=build-worker bench/worker.sh
#   BENCH_BATCHES="500 5000"           (worker --batch values; 500 is the default)
#   BENCH_WORKERS="1 2 4"              (workers in one group into one PostgreSQL)
#   BENCH_CONVERSIONS="20000"          (then conversion events: friends' signups and
#                                       subscribes, two rewards each; "" skips them)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${REFERRAL_BUILD_DIR:-$ROOT/build}
WORKER=$BUILD/referral-worker
CTL=$BUILD/referralctl
read -r -a BATCHES <<<"${BENCH_BATCHES:-500 5000}"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000 1000000)
for bin in "$WORKER" "$CTL"; do
  [ -x "$bin" ] || { echo "bench/worker.sh: $bin is missing: build first" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/referral-bench-XXXXXX)
chmod 777 "$TMP"
REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGUSER=$( [ "$(id -u)" -eq 0 ] && echo postgres || id -un )

cleanup() {
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [ -d "$TMP/pg" ] && as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$TMP" --daemonize yes --logfile "$TMP/redis.log" >/dev/null
as_pg "$PGBIN/initdb" -D "$TMP/pg" -A trust -U "$PGUSER" --no-sync -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -w -l "$TMP/pg.log" \
  -o "-p $PG_PORT -k $TMP -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# N click events for CODE as one RESP stream for redis-cli --pipe.
generate() { # N CODE
  python3 - "$1" "$2" <<'PY'
import os, sys
n, code = int(sys.argv[1]), sys.argv[2].encode()
out = sys.stdout.buffer
def bulk(b): return b"$%d\r\n%s\r\n" % (len(b), b)
ts = b"1764000000000"
pre = b"*27\r\n" + bulk(b"XADD") + bulk(b"referral:events") + bulk(b"*") + bulk(b"v") + bulk(b"1") + bulk(b"id")
mid = (bulk(b"type") + bulk(b"click") + bulk(b"ts") + bulk(ts) + bulk(b"code") + bulk(code) + bulk(b"visitor"))
tail = (bulk(b"first_ts") + bulk(ts) + bulk(b"ip") + bulk(b"203.0.113.7") +
        bulk(b"ua") + bulk(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36") +
        bulk(b"url") + bulk(b"/pricing?ref=" + code) + bulk(b"referer") + bulk(b"https://news.example.com/item?id=1") +
        bulk(b"host") + bulk(b"www.example.com"))
buf = []
# ids as the module makes them: 12 hex digits of Unix ms, 20 random ones
t0 = 1764000000000
for i in range(n):
    r = os.urandom(26).hex().encode()
    eid = b"%012x" % (t0 + i // 100) + r[:20]
    buf.append(pre + bulk(eid) + mid + bulk(r[20:52]) + tail)
    if len(buf) == 10000:
        out.write(b"".join(buf)); buf = []
out.write(b"".join(buf))
PY
}

CODE=benchReferrerCode0123456789

fresh_db() { # BACKEND -> prints the database URL, migrated, with CODE owned by bench-referrer
  local backend=$1 db
  if [ "$backend" = sqlite ]; then
    rm -f "$TMP"/bench.db*
    db="sqlite://$TMP/bench.db"
    "$CTL" --database "$db" migrate >/dev/null
    sqlite3 "$TMP/bench.db" "INSERT INTO referral (user_id, code, label, created_at)
                              VALUES ('bench-referrer', '$CODE', '', '2025-01-01 00:00:00.000000')"
  else
    as_pg "$PGBIN/dropdb" --if-exists -h 127.0.0.1 -p "$PG_PORT" -U "$PGUSER" bench >/dev/null 2>&1
    as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PGUSER" bench
    db="postgresql://$PGUSER@127.0.0.1:$PG_PORT/bench"
    "$CTL" --database "$db" migrate >/dev/null
    psql -X -q "$db" -c "INSERT INTO referral (user_id, code, label, created_at)
                         VALUES ('bench-referrer', '$CODE', '', now())" >/dev/null
  fi
  # The previous run's dirty pages (a 1M-event SQLite WAL is a gigabyte)
  # are written back now, not during this run's timing.
  sync
  echo "$db"
}

# One result line: events/s and us/event for N events drained in T1 - T0.
report() { # BACKEND N WHAT T0 T1 TAIL
  python3 - "$@" <<'PY'
import sys
backend, n, what, t0, t1, tail = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
s = t1 - t0
print(f"{backend:<11} {n:>9} {what}  {s:8.2f} s  {n / s:>10,.0f} events/s  {s / n * 1e6:7.2f} us/event  {tail}")
PY
}

# A fresh stream of N events from GENERATOR (generate, generate_conversions).
fill() { # GENERATOR N
  redis-cli -p "$REDIS_PORT" del referral:events >/dev/null
  "$1" "$2" "$CODE" | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
  [ "$(redis-cli -p "$REDIS_PORT" xlen referral:events)" -eq "$2" ] || { echo "fill failed" >&2; exit 1; }
}

run_one() { # BACKEND N BATCH
  local backend=$1 n=$2 batch=$3 db t0 t1 stored
  db=$(fresh_db "$backend")
  t0=$(date +%s.%N)
  # every run reads the whole stream through a consumer group of its own
  "$WORKER" --once --redis "redis://127.0.0.1:$REDIS_PORT" --database "$db" --batch "$batch" \
    --group "bench-$backend-$batch" 2>"$TMP/worker.log" || { cat "$TMP/worker.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  stored=$("$CTL" --json --database "$db" stats |
           python3 -c 'import json,sys; r=json.load(sys.stdin)["referrers"]; print(r[0]["clicks"] if r else 0)')
  report "$backend" "$n" "events  batch $(printf %5d "$batch")" "$t0" "$t1" "stored $stored"
  [ "$stored" -eq "$n" ] || { echo "bench/worker.sh: stored $stored of $n" >&2; exit 1; }
}

# N conversion events for CODE: N/2 friends, each a signup carrying the
# code, then (100 friends later) a paid subscribe: the statements of a
# conversion, rather than the clicks' one INSERT per batch.
generate_conversions() { # N CODE
  python3 - "$1" "$2" <<'PY'
import os, sys
n, code = int(sys.argv[1]), sys.argv[2].encode()
out = sys.stdout.buffer
def bulk(b): return b"$%d\r\n%s\r\n" % (len(b), b)
def xadd(fields):
    parts = [b"XADD", b"referral:events", b"*"]
    for k, v in fields:
        parts += [k, v]
    return b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts)
t0 = 1764000000000
def event(i, action, user, extra):
    eid = b"%012x" % (t0 + i) + os.urandom(10).hex().encode()
    f = [(b"v", b"1"), (b"id", eid), (b"type", b"conversion"), (b"ts", b"%d" % (t0 + i)),
         (b"code", code if action == b"signup" else b""), (b"visitor", os.urandom(16).hex().encode()),
         (b"first_ts", b"%d" % (t0 + i) if action == b"signup" else b""), (b"ip", b"203.0.113.%d" % (i % 250)),
         (b"ua", b"Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"), (b"url", b"/signup"),
         (b"referer", b""), (b"host", b"www.example.com"), (b"action", action), (b"user", user)]
    return xadd(f + extra)
buf, friends, i = [], n // 2, 0
for k in range(0, friends, 100):
    group = range(k, min(k + 100, friends))
    for f in group:
        buf.append(event(i, b"signup", b"friend-%d" % f, [])); i += 1
    for f in group:
        buf.append(event(i, b"subscribe", b"friend-%d" % f,
                         [(b"amount", b"1200"), (b"currency", b"usd"), (b"order", b"order-%d" % f)])); i += 1
out.write(b"".join(buf))
PY
}

run_conversions() { # BACKEND N: one worker, rules with no cap
  local backend=$1 n=$2 db t0 t1 rewards
  db=$(fresh_db "$backend")
  cat >"$TMP/rules.toml" <<'TOML'
[[reward]]
name = "signup-trial"
action = "signup"
referrer_plan = "any"
referrer = { kind = "trial_days", amount = 7 }
referee  = { kind = "trial_days", amount = 7 }

[[reward]]
name = "give-10-get-10"
action = "subscribe"
referrer_plan = "any"
referrer = { kind = "credit", amount = 1000, currency = "usd" }
referee  = { kind = "credit", amount = 1000, currency = "usd" }
TOML
  redis-cli -p "$REDIS_PORT" xgroup destroy referral:events "bench-conv-$backend" >/dev/null
  t0=$(date +%s.%N)
  "$WORKER" --once --config "$TMP/rules.toml" --redis "redis://127.0.0.1:$REDIS_PORT" --database "$db" \
    --group "bench-conv-$backend" 2>"$TMP/worker.log" || { cat "$TMP/worker.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  if [ "$backend" = sqlite ]; then
    rewards=$(sqlite3 "$TMP/bench.db" "SELECT count(*) FROM referral_reward")
  else
    rewards=$(psql -X -q -t -A "$db" -c "SELECT count(*) FROM referral_reward")
  fi
  report "$backend" "$n" "conversions" "$t0" "$t1" "rewards $rewards"
  # two rules, both sides, every friend
  [ "$rewards" -eq $(( n / 2 * 4 )) ] || { echo "bench/worker.sh: $rewards rewards, expected $(( n / 2 * 4 ))" >&2; exit 1; }
}

run_many() { # BACKEND N WORKERS: that many workers --once in one consumer group, on one database
  local backend=$1 n=$2 workers=$3 db t0 t1 stored pids=()
  db=$(fresh_db "$backend")
  t0=$(date +%s.%N)
  for i in $(seq "$workers"); do
    "$WORKER" --once --redis "redis://127.0.0.1:$REDIS_PORT" --database "$db" \
      --group "bench-$backend-x$workers" --consumer "w$i" 2>"$TMP/worker-$i.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$TMP"/worker-*.log >&2; exit 1; }; done
  t1=$(date +%s.%N)
  stored=$("$CTL" --json --database "$db" stats |
           python3 -c 'import json,sys; r=json.load(sys.stdin)["referrers"]; print(r[0]["clicks"] if r else 0)')
  report "$backend" "$n" "events  $workers worker(s)" "$t0" "$t1" "stored $stored"
  [ "$stored" -eq "$n" ] || { echo "bench/worker.sh: stored $stored of $n" >&2; exit 1; }
}

read -r -a WORKER_COUNTS <<<"${BENCH_WORKERS:-1 2 4}"

echo "referral-worker --once draining click events for one known code"
for n in "${SIZES[@]}"; do
  fill generate "$n"
  for backend in sqlite postgresql; do
    for batch in "${BATCHES[@]}"; do
      run_one "$backend" "$n" "$batch"
    done
  done
  # Several workers in one group into one PostgreSQL (batch 500).
  for w in "${WORKER_COUNTS[@]}"; do
    run_many postgresql "$n" "$w"
  done
done

read -r -a CONVERSIONS <<<"${BENCH_CONVERSIONS-20000}"
[ ${#CONVERSIONS[@]} -eq 0 ] || echo "referral-worker --once draining conversions (signup, then subscribe; two rewards each)"
for n in "${CONVERSIONS[@]}"; do
  fill generate_conversions "$n"
  for backend in sqlite postgresql; do
    run_conversions "$backend" "$n"
  done
done
