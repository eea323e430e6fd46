"""referral_status (SPEC directive table): JSON counters that are totals
across every worker, moving exactly as traffic says."""

import json
import os

from harness import echoed, http_request, referral_status, wait_events, wait_until

COUNTERS = ["sent", "buffered", "spooled", "replayed", "dropped", "invalid_codes",
            "rejected_cookies", "conversions", "malformed_conversions", "skipped"]

BACKEND = """
        location /signup {
            add_header X-Referral-Conversion "signup; user=$arg_user" always;
            return 200 "ok\\n";
        }
        location /bad {
            add_header X-Referral-Conversion "signup; nobody=1" always;
            return 200 "ok\\n";
        }
"""
PROXY = """
        location /app/ { referral on; proxy_pass http://127.0.0.1:{backend}/; }
"""


def test_status_is_json_with_every_counter(edge):
    n = edge()
    r = http_request(n.port, "/status")
    assert r.status == 200
    assert "json" in (r.header("Content-Type") or ""), r.headers
    st = json.loads(r.body)
    for k in COUNTERS:
        assert isinstance(st[k], int) and st[k] == 0, (k, st)
    # nothing was sent yet and the connection opens lazily
    assert st["redis"] == "idle", st


def test_counters_move_with_traffic_across_workers(edge, rc):
    n = edge(server=PROXY, backend=BACKEND, workers=2)
    clicks = 30
    cookie = None
    for i in range(clicks):
        r = http_request(n.port, f"/?ref=status_{i:02d}")
        cookie = cookie or r.cookie().value
    for bad in ("abc", "a.b.c.d", "%22quoted%22"):
        assert echoed(http_request(n.port, f"/?ref={bad}"))["status"] == "invalid"
    altered = cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB")
    http_request(n.port, "/", [("Cookie", f"referral={altered}")])
    http_request(n.port, "/", [("Cookie", f"referral={altered}")])
    http_request(n.port, "/app/signup?user=1")
    http_request(n.port, "/app/signup?user=2")
    http_request(n.port, "/app/bad")
    total_events = clicks + 2
    wait_events(rc, total_events)
    st = wait_until(lambda: (lambda s: s if s["sent"] >= total_events else None)(
        referral_status(n.port)), timeout=10)
    assert st, referral_status(n.port)
    assert st["sent"] == total_events
    assert st["buffered"] == 0
    assert st["spooled"] == 0 and st["replayed"] == 0 and st["dropped"] == 0
    assert st["invalid_codes"] == 3
    assert st["rejected_cookies"] == 2
    assert st["conversions"] == 2
    assert st["malformed_conversions"] == 1
    assert st["redis"] == "connected"


def test_status_answers_the_same_from_any_worker(edge, rc):
    n = edge(workers=2)
    for i in range(10):
        http_request(n.port, f"/?ref=same_{i:02d}")
    wait_events(rc, 10)
    wait_until(lambda: referral_status(n.port)["sent"] == 10)
    seen = {referral_status(n.port)["sent"] for _ in range(20)}
    assert seen == {10}, f"status differs between workers: {seen}"


# ------------------------------------------------ workers, crashes, reloads

def pid_location():
    return '        location = /pid { return 200 "$pid"; }\n'


def spread_over_workers(n, count, prefix):
    """`count` clicks over fresh connections; with `reuseport` the kernel
    spreads them over the workers. Returns the pids that answered."""
    for i in range(count):
        assert echoed(http_request(n.port, f"/?ref={prefix}_{i:03d}"))["status"] == "new"
    return {http_request(n.port, "/pid").body for _ in range(40)}


def unreachable_redis():
    from harness import dead_port
    return f"127.0.0.1:{dead_port()}"


def edge_reuseport(edge, **kw):
    n = edge(server=pid_location(), start=False, **kw)
    # every worker its own listening socket, so connections reach all of them
    text = open(n.conf).read().replace(f"listen 127.0.0.1:{n.port};",
                                       f"listen 127.0.0.1:{n.port} reuseport;", 1)
    with open(n.conf, "w") as f:
        f.write(text)
    return n.start()


def test_status_sums_every_worker(edge, rc):
    n = edge_reuseport(edge, workers=3)
    pids = spread_over_workers(n, 60, "sum")
    assert len(pids) >= 2, f"the kernel sent every connection to one worker: {pids}"
    wait_events(rc, 60)
    assert wait_until(lambda: referral_status(n.port)["sent"] == 60), referral_status(n.port)
    # every worker answers with the sum, not its own share
    answers = {(s["clicks"], s["sent"]) for s in (referral_status(n.port) for _ in range(30))}
    assert answers == {(60, 60)}, answers


def test_a_killed_worker_leaves_counters_and_takes_its_gauges(edge):
    """Redis unreachable, no spool: each worker holds its clicks in memory
    (the `buffered` gauge). A SIGKILLed worker's share leaves the gauge at
    once; the counters it raised stay."""
    import signal
    from harness import worker_pids
    n = edge_reuseport(edge, workers=2, redis_addr=unreachable_redis())
    pids = spread_over_workers(n, 40, "kill")
    assert len(pids) == 2, pids
    # a reconnect attempt reads "connecting" for its moment: waited past
    st = wait_until(lambda: (lambda s: s if s["buffered"] == 40 and s["redis"] == "disconnected"
                             else None)(referral_status(n.port)))
    assert st and st["clicks"] == 40, referral_status(n.port)
    victim = int(sorted(pids)[0])
    # what the victim holds: its share is what the other worker does not
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: victim not in worker_pids(n) and len(worker_pids(n)) == 2)
    after = referral_status(n.port)
    assert after["clicks"] == 40, after          # counters: monotonic
    assert 0 < after["buffered"] < 40, after      # the survivor's share only
    assert after["dropped"] == 0, after
    # the replacement worker starts from nothing and counts on
    kept = after["buffered"]
    for pid in set(worker_pids(n)) - {victim}:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: len(worker_pids(n)) == 2 and not (worker_pids(n) & {int(p) for p in pids}))
    st = referral_status(n.port)
    assert st["buffered"] == 0 and st["clicks"] == 40, (kept, st)
    for i in range(5):
        http_request(n.port, f"/?ref=again_{i}")
    st = wait_until(lambda: (lambda s: s if s["clicks"] == 45 else None)(referral_status(n.port)))
    assert st and st["buffered"] == 5, referral_status(n.port)
    n.expect_killed_worker()  # the victim, then the others


def test_counters_survive_a_reload_and_old_workers_gauges_go(edge):
    """A reload replaces every worker: counters carry on; what the old
    workers held (Redis unreachable, no spool) is dropped when they exit,
    and the gauge then counts the new workers only."""
    from harness import reload_and_wait
    n = edge(workers=2, redis_addr=unreachable_redis())
    for i in range(10):
        http_request(n.port, f"/?ref=reload_{i}")
    assert wait_until(lambda: referral_status(n.port)["buffered"] == 10), referral_status(n.port)
    reload_and_wait(n, timeout=30)
    st = wait_until(lambda: (lambda s: s if s["dropped"] == 10 else None)(referral_status(n.port)),
                    timeout=20)
    assert st, referral_status(n.port)
    assert st["buffered"] == 0 and st["clicks"] == 10, st
    http_request(n.port, "/?ref=reload_after")
    st = wait_until(lambda: (lambda s: s if s["clicks"] == 11 else None)(referral_status(n.port)))
    assert st and st["buffered"] == 1, referral_status(n.port)


# ------------------------------------------------------------- Prometheus

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def parse_prometheus(text):
    """Text format 0.0.4: {name: (type, {labels: value})}. Fails on any line
    the format does not allow, a sample before its TYPE, or a repeated TYPE."""
    import re
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
                        r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*)\})? (-?[0-9]+(\.[0-9]+)?)$')
    metrics, helped = {}, set()
    assert text.endswith("\n"), "the last line must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            assert name not in metrics, f"TYPE twice: {line}"
            metrics[name] = (kind, {})
        else:
            m = sample.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            assert name in metrics, f"sample before its TYPE: {line}"
            metrics[name][1][m.group(3) or ""] = float(m.group(5))
    return metrics


def test_prometheus_text_matches_json(edge, rc):
    n = edge(workers=2)
    for i in range(7):
        http_request(n.port, f"/?ref=prom_{i}")
    http_request(n.port, "/?ref=x")  # invalid
    wait_events(rc, 7)
    assert wait_until(lambda: referral_status(n.port)["sent"] == 7)
    js = referral_status(n.port)
    r = http_request(n.port, "/status?format=prometheus")
    assert r.status == 200
    assert r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", r.headers
    m = parse_prometheus(r.body)
    for name, (kind, _) in m.items():
        assert name.startswith("nginx_referral_"), name
        assert name.endswith("_total") == (kind == "counter"), (name, kind)
    for key in COUNTERS + ["clicks", "skipped"]:
        name = f"nginx_referral_{key}" + ("" if key == "buffered" else "_total")
        assert m[name][1][""] == js[key], (name, m[name], js[key])
    assert m["nginx_referral_buffered"][0] == "gauge"
    assert m["nginx_referral_clicks_total"][1][""] == 7
    assert m["nginx_referral_invalid_codes_total"][1][""] == 1
    assert m["nginx_referral_workers"][1][""] == 2
    states = m["nginx_referral_redis_workers"][1]
    assert states['state="connected"'] + states['state="idle"'] == 2, states
    assert states['state="disconnected"'] == 0 and m["nginx_referral_redis_up"][1][""] == 1


def test_accept_header_picks_the_format(edge):
    n = edge()
    def content_type(accept, path="/status"):
        headers = [("Accept", accept)] if accept is not None else []
        r = http_request(n.port, path, headers)
        assert r.status == 200
        return r.header("Content-Type")
    prom = "text/plain; version=0.0.4; charset=utf-8"
    assert content_type(PROMETHEUS_ACCEPT) == prom          # Prometheus's own scraper
    assert content_type("text/plain") == prom
    assert content_type("application/json;q=0.5, text/plain") == prom
    assert content_type(None) == "application/json"
    assert content_type("*/*") == "application/json"         # curl
    assert content_type("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8") \
        == "application/json"                                # a browser
    assert content_type("application/json, text/plain;q=0.9") == "application/json"
    assert content_type(PROMETHEUS_ACCEPT, "/status?format=json") == "application/json"


def test_prometheus_reports_redis_down(edge):
    n = edge(redis_addr=unreachable_redis())
    http_request(n.port, "/?ref=down_1")
    assert wait_until(lambda: referral_status(n.port)["redis"] == "disconnected")

    def metrics():
        m = parse_prometheus(http_request(n.port, "/status?format=prometheus").body)
        return m if m["nginx_referral_redis_workers"][1].get('state="disconnected"') == 1 else None
    m = wait_until(metrics)
    assert m, http_request(n.port, "/status?format=prometheus").body
    assert m["nginx_referral_redis_up"][1][""] == 0
    assert m["nginx_referral_redis_workers"][1]['state="disconnected"'] == 1
    assert m["nginx_referral_buffered"][1][""] == 1
