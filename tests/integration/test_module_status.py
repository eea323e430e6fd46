"""referral_status (SPEC directive table): JSON counters that are totals
across every worker, moving exactly as traffic says."""

import json

from harness import echoed, http_request, referral_status, wait_events, wait_until

COUNTERS = ["sent", "buffered", "spooled", "replayed", "dropped", "invalid_codes",
            "rejected_cookies", "conversions", "malformed_conversions"]

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
