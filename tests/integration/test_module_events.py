"""Click events in Redis (SPEC "Events in Redis", schema version 1): every
field, the cuts, the stream key, and unique ids under a burst."""

import threading
import time

import pytest

from harness import (CLICK_FIELDS, CONVERSION_FIELDS, ECHO, HEX32, echoed, http_request,
                     wait_events)

CODE = "event_code_1"


def test_click_event_has_every_field_of_schema_1(edge, rc):
    n = edge()
    t0 = int(time.time() * 1000)
    r = http_request(n.port, f"/landing/page?ref={CODE}&utm=x%20y",
                     [("User-Agent", "Mozilla/5.0 (X11) test-agent"),
                      ("Referer", "https://blog.example/post?id=3")],
                     host="www.example.com")
    t1 = int(time.time() * 1000)
    seen = echoed(r)
    events = wait_events(rc, 1)
    assert len(events) == 1
    e = events[0]
    assert set(e) == CLICK_FIELDS, f"fields: {sorted(e)}"
    assert e["v"] == "1"
    assert HEX32.match(e["id"])
    assert e["type"] == "click"
    assert t0 - 1000 <= int(e["ts"]) <= t1 + 1000, (t0, e["ts"], t1)
    assert e["code"] == CODE
    assert e["visitor"] == seen["visitor"]
    assert e["first_ts"] == e["ts"], "a new click's first_ts is its own ts"
    assert e["ip"] == "127.0.0.1"
    assert e["ua"] == "Mozilla/5.0 (X11) test-agent"
    assert e["url"] == f"/landing/page?ref={CODE}&utm=x%20y"
    assert e["referer"] == "https://blog.example/post?id=3"
    assert e["host"] == "www.example.com"


def test_click_without_user_agent_or_referer_has_empty_fields(edge, rc):
    n = edge()
    http_request(n.port, f"/?ref={CODE}")
    e = wait_events(rc, 1)[0]
    assert e["ua"] == "" and e["referer"] == ""
    assert set(e) == CLICK_FIELDS


def test_event_id_differs_from_visitor_id(edge, rc):
    n = edge()
    http_request(n.port, f"/?ref={CODE}")
    e = wait_events(rc, 1)[0]
    assert e["id"] != e["visitor"]


def test_long_user_agent_url_and_referer_are_cut(edge, rc):
    n = edge(http="    large_client_header_buffers 4 16k;")
    url = f"/?ref={CODE}&pad=" + "p" * 3000
    ua = "U" * 600
    referer = "https://r.example/" + "r" * 3000
    r = http_request(n.port, url, [("User-Agent", ua), ("Referer", referer)])
    assert r.status == 200
    e = wait_events(rc, 1)[0]
    assert e["ua"] == ua[:512]
    assert e["url"] == url[:2048]
    assert e["referer"] == referer[:2048]


def test_ip_is_the_client_address_after_realip(edge, rc):
    n = edge(http="""
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
""")
    http_request(n.port, f"/?ref={CODE}", [("X-Forwarded-For", "203.0.113.7")])
    e = wait_events(rc, 1)[0]
    assert e["ip"] == "203.0.113.7"


def test_kept_click_records_the_followed_code_and_the_original_first_ts(edge, rc):
    n = edge()
    first = http_request(n.port, f"/?ref={CODE}")
    time.sleep(0.05)
    http_request(n.port, "/?ref=second_link", [("Cookie", f"referral={first.cookie().value}")])
    a, b = wait_events(rc, 2)
    assert b["code"] == "second_link"
    assert b["visitor"] == a["visitor"]
    assert b["first_ts"] == a["ts"]
    assert int(b["ts"]) > int(a["ts"])


def test_stream_key_is_configurable(edge, rc):
    n = edge(http="    referral_stream edge:clicks;")
    http_request(n.port, f"/?ref={CODE}")
    events = wait_events(rc, 1, key="edge:clicks")
    assert [e["code"] for e in events] == [CODE]
    assert rc.cmd("EXISTS", "referral:events") == 0


def test_events_keep_request_order_from_one_worker(edge, rc):
    n = edge()
    codes = [f"order_{i:03d}" for i in range(50)]
    for c in codes:
        http_request(n.port, f"/?ref={c}")
    events = wait_events(rc, 50)
    assert [e["code"] for e in events] == codes


def test_burst_gives_unique_event_ids_and_visitor_ids(edge, rc):
    n = edge(workers=2)
    total, threads = 500, 20
    visitors, failures = [], []
    lock = threading.Lock()

    def run(k):
        for i in range(k, total, threads):
            try:
                r = http_request(n.port, f"/?ref=burst_{i % 7}xx")
                v = echoed(r)
                with lock:
                    if r.status != 200 or v["status"] != "new":
                        failures.append((i, r.status, r.body))
                    visitors.append(v["visitor"])
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                with lock:
                    failures.append((i, repr(exc)))

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures, failures[:10]
    assert len(visitors) == total
    assert len(set(visitors)) == total, "visitor ids are unique"
    events = wait_events(rc, total, timeout=15)
    assert len(events) == total, f"{len(events)} events for {total} clicks"
    assert len({e["id"] for e in events}) == total, "event ids are unique"
    assert {e["visitor"] for e in events} == set(visitors)
    assert all(HEX32.match(e["id"]) and HEX32.match(e["visitor"]) for e in events)


def test_variables_in_a_location_without_referral_make_no_event(edge, rc):
    n = edge(server="""
        location /novars { %s }
""" % ECHO)
    r = http_request(n.port, f"/novars?ref={CODE}")
    assert r.status == 200
    assert r.cookie() is None
    http_request(n.port, "/?ref=sentinel")
    assert [e["code"] for e in wait_events(rc, 1)] == ["sentinel"]


def test_click_counts_when_the_client_leaves_before_the_backend_answers(edge, rc):
    """The attribution is made when the location is known, not only when
    response headers go out: a visitor who gives up on a slow page was
    still referred."""
    import socket
    import time
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (kernel backlog) and never answers
    port = silent.getsockname()[1]
    try:
        n = edge(server=f"""
        location /slow/ {{ referral on; proxy_pass http://127.0.0.1:{port}; }}
""")
        s = socket.create_connection(("127.0.0.1", n.port))
        s.sendall(f"GET /slow/page?ref={CODE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.3)
        s.close()
        events = wait_events(rc, 1, timeout=5)
        assert [(e["type"], e["code"]) for e in events] == [("click", CODE)]
    finally:
        silent.close()


# ------------------------------------------------------- referral_ip_mask

REALIP = """
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
"""
MASK_BACKEND = """
        location /signup {
            add_header X-Referral-Conversion "signup; user=$arg_user" always;
            return 200 "ok\\n";
        }
"""


def masked_click(n, rc, client_ip, count):
    """A click from `client_ip` (through realip); every field of its event
    checked but ip, which is returned."""
    ua, referer = "Mozilla/5.0 (mask test)", "https://blog.example/p"
    t0 = int(time.time() * 1000)
    r = http_request(n.port, f"/m/?ref={CODE}",
                     [("X-Forwarded-For", client_ip), ("User-Agent", ua), ("Referer", referer)],
                     host="shop.example")
    t1 = int(time.time() * 1000)
    seen = echoed(r)
    assert seen["status"] == "new", r
    e = wait_events(rc, count)[count - 1]
    assert set(e) == CLICK_FIELDS, sorted(e)
    assert HEX32.match(e["id"]) and e["id"] != seen["visitor"]
    assert t0 - 1000 <= int(e["ts"]) <= t1 + 1000
    assert {k: e[k] for k in ("v", "type", "code", "visitor", "first_ts", "ua", "url", "referer", "host")} == {
        "v": "1", "type": "click", "code": CODE, "visitor": seen["visitor"], "first_ts": e["ts"],
        "ua": ua, "url": f"/m/?ref={CODE}", "referer": referer, "host": "shop.example"}
    return e["ip"]


@pytest.mark.parametrize("client_ip,mask,want", [
    ("203.0.113.7", "24 48", "203.0.113.0"),
    ("203.0.113.7", "8", "203.0.0.0"),
    ("203.0.113.7", "0 0", "0.0.0.0"),
    ("203.0.113.7", "32 128", "203.0.113.7"),
    ("2001:db8:abcd:1234:5678:9abc:def0:1234", "24", "2001:db8:abcd::"),   # V6BITS defaults to 48
    ("2001:db8:abcd:1234:5678:9abc:def0:1234", "24 64", "2001:db8:abcd:1234::"),
    ("2001:db8:abcd:1234:5678:9abc:def0:1234", "24 0", "::"),
    ("2001:DB8:abcd:1234:5678:9abc:def0:1234", "32 128", "2001:db8:abcd:1234:5678:9abc:def0:1234"),
    ("::ffff:203.0.113.7", "24 128", "203.0.113.0"),                      # mapped: as IPv4
    ("::ffff:198.51.100.200", "16 48", "198.51.0.0"),
])
def test_ip_mask_keeps_only_the_leading_bits(edge, rc, client_ip, mask, want):
    n = edge(http=REALIP, server=f"        location /m/ {{ referral on; referral_ip_mask {mask}; {ECHO} }}\n")
    assert masked_click(n, rc, client_ip, 1) == want


def test_ip_mask_applies_to_conversions_too(edge, rc):
    n = edge(http=REALIP + "    referral_ip_mask 24 48;\n",
             server="        location /app/ { referral on; proxy_pass http://127.0.0.1:{backend}/; }\n",
             backend=MASK_BACKEND)
    for ip, want in (("203.0.113.7", "203.0.113.0"), ("2001:db8:abcd:1234::9", "2001:db8:abcd::"),
                     ("::ffff:203.0.113.9", "203.0.113.0")):
        r = http_request(n.port, "/app/signup?user=u1", [("X-Forwarded-For", ip)])
        assert r.status == 200 and r.header("X-Referral-Conversion") is None
        e = wait_events(rc, 1, settle=0)[-1]
        rc.cmd("DEL", "referral:events")
        assert set(e) == CONVERSION_FIELDS
        assert (e["type"], e["ip"], e["user"], e["action"]) == ("conversion", want, "u1", "signup"), e


def test_ip_mask_is_inherited_and_an_inner_level_replaces_it(edge, rc):
    n = edge(http=REALIP + "    referral_ip_mask 16 32;\n",
             server=f"""
        location /m/ {{ referral on; {ECHO} }}
        location /full/ {{ referral on; referral_ip_mask off; {ECHO} }}
        location /more/ {{ referral on; referral_ip_mask 24; {ECHO} }}
""")
    xff = [("X-Forwarded-For", "203.0.113.7")]
    http_request(n.port, f"/m/?ref={CODE}", xff)
    http_request(n.port, f"/full/?ref={CODE}", xff)
    http_request(n.port, f"/more/?ref={CODE}", xff)
    http_request(n.port, f"/more/?ref={CODE}", [("X-Forwarded-For", "2001:db8:abcd:1234::1")])
    http_request(n.port, f"/m/?ref={CODE}", [("X-Forwarded-For", "2001:db8:abcd:1234::1")])
    assert [e["ip"] for e in wait_events(rc, 5)] == [
        "203.0.0.0", "203.0.113.7", "203.0.113.0", "2001:db8:abcd::", "2001:db8::"]


def test_without_ip_mask_the_full_address_is_sent(edge, rc):
    n = edge(http=REALIP, server=f"        location /m/ {{ referral on; {ECHO} }}\n")
    assert masked_click(n, rc, "2001:db8:abcd:1234::7", 1) == "2001:db8:abcd:1234::7"
