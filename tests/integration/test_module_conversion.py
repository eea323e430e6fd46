"""Conversions reported by any backend (SPEC "Conversions from any backend"):
recorded with the visitor's attribution, always stripped from the response,
malformed ones logged at warn and not recorded, forged request headers
ignored. The backend is a second server in the same nginx, reached through
proxy_pass (the header filter then sees its headers)."""

import pytest

from harness import (CONVERSION_FIELDS, HEX32, echoed, http_request,
                     referral_status, wait_events)

CODE = "conv_code-9"

MALFORMED = {
    "missing_user": "signup",
    "empty_user": "signup; user=",
    "user_with_space": "signup; user=a b",
    "user_too_long": "signup; user=" + "u" * 129,
    "uppercase_action": "SignUp; user=1",
    "action_too_long": "a" * 33 + "; user=1",
    "action_with_dash": "sign-up; user=1",
    "unknown_key": "signup; user=1; coupon=x",
    "amount_not_integer": "subscribe; user=1; amount=9.99",
    "amount_with_letters": "subscribe; user=1; amount=12abc",
    "currency_four_letters": "subscribe; user=1; amount=100; currency=usdx",
    "currency_digits": "subscribe; user=1; amount=100; currency=123",
    "order_too_long": "subscribe; user=1; order=" + "o" * 129,
    "customer_with_dash": "subscribe; user=1; customer=cus-1",
    "pair_without_equals": "signup; user",
    "empty": ";",
}

BACKEND = """
        location /signup {
            add_header X-Referral-Conversion "signup; user=$arg_user" always;
            return 200 "ok\\n";
        }
        location /subscribe {
            add_header X-Referral-Conversion "subscribe; user=42; amount=999; currency=usd; order=in_1Nx; customer=cus_NffrFeUfNV2Hib" always;
            return 200 "ok\\n";
        }
        location /two {
            add_header X-Referral-Conversion "signup; user=7" always;
            add_header X-Referral-Conversion "subscribe; user=7; amount=500; currency=eur; order=o-7" always;
            return 200 "ok\\n";
        }
        location /mixed {
            add_header X-Referral-Conversion "signup" always;
            add_header X-Referral-Conversion "signup; user=8" always;
            return 200 "ok\\n";
        }
        location /error {
            add_header X-Referral-Conversion "signup; user=9" always;
            return 500 "boom\\n";
        }
        location /custom {
            add_header X-Conv "signup; user=11" always;
            add_header X-Referral-Conversion "signup; user=12" always;
            return 200 "ok\\n";
        }
        location /echo {
            return 200 "conv=$http_x_referral_conversion\\n";
        }
""" + "".join(f"""
        location = /bad/{name} {{
            add_header X-Referral-Conversion "{value}" always;
            return 200 "ok\\n";
        }}
""" for name, value in MALFORMED.items())

PROXY = """
        location /app/ {
            referral on;
            proxy_pass http://127.0.0.1:{backend}/;
        }
"""


@pytest.fixture
def shop(edge):
    return edge(server=PROXY, backend=BACKEND)


def click(port, code=CODE):
    r = http_request(port, f"/?ref={code}")
    return r.cookie().value, echoed(r)


def test_conversion_is_recorded_with_the_cookie_attribution(shop, rc):
    cookie, seen = click(shop.port)
    r = http_request(shop.port, "/app/signup?user=42",
                     [("Cookie", f"referral={cookie}"), ("User-Agent", "conv-agent/1"),
                      ("Referer", "https://shop.example/cart")], host="shop.example")
    assert r.status == 200 and r.body == "ok\n"
    events = wait_events(rc, 2)
    assert len(events) == 2
    clk, conv = events
    assert set(conv) == CONVERSION_FIELDS, sorted(conv)
    assert conv["v"] == "1"
    assert conv["type"] == "conversion"
    assert HEX32.match(conv["id"]) and conv["id"] != clk["id"]
    assert conv["action"] == "signup"
    assert conv["user"] == "42"
    assert conv["amount"] == "" and conv["currency"] == "" and conv["order"] == ""
    assert conv["code"] == CODE
    assert conv["visitor"] == seen["visitor"]
    assert conv["first_ts"] == clk["first_ts"]
    assert int(conv["ts"]) >= int(clk["ts"])
    assert conv["ip"] == "127.0.0.1"
    assert conv["ua"] == "conv-agent/1"
    assert conv["url"] == "/app/signup?user=42"
    assert conv["referer"] == "https://shop.example/cart"
    assert conv["host"] == "shop.example"


def test_conversion_header_is_removed_from_the_response(shop):
    r = http_request(shop.port, "/app/signup?user=1")
    assert r.status == 200
    assert r.all("X-Referral-Conversion") == []


def test_conversion_with_every_parameter(shop, rc):
    cookie, _ = click(shop.port)
    r = http_request(shop.port, "/app/subscribe", [("Cookie", f"referral={cookie}")])
    assert r.all("X-Referral-Conversion") == []
    conv = wait_events(rc, 2)[1]
    assert (conv["action"], conv["user"], conv["amount"], conv["currency"], conv["order"],
            conv["customer"]) == ("subscribe", "42", "999", "usd", "in_1Nx", "cus_NffrFeUfNV2Hib")


def test_conversion_without_attribution_has_empty_code(shop, rc):
    r = http_request(shop.port, "/app/signup?user=77")
    assert r.status == 200
    events = wait_events(rc, 1)
    assert len(events) == 1
    conv = events[0]
    assert set(conv) == CONVERSION_FIELDS
    assert conv["type"] == "conversion" and conv["user"] == "77"
    assert conv["code"] == ""
    assert conv["visitor"] == ""
    assert conv["first_ts"] == ""


def test_conversion_on_the_click_itself_uses_the_new_attribution(shop, rc):
    r = http_request(shop.port, f"/app/signup?user=5&ref={CODE}")
    v = r.cookie()
    assert v is not None
    events = wait_events(rc, 2)
    assert sorted(e["type"] for e in events) == ["click", "conversion"]
    conv = next(e for e in events if e["type"] == "conversion")
    clk = next(e for e in events if e["type"] == "click")
    assert conv["code"] == CODE
    assert conv["visitor"] == clk["visitor"] and HEX32.match(conv["visitor"])


def test_several_header_lines_make_several_events(shop, rc):
    cookie, seen = click(shop.port)
    r = http_request(shop.port, "/app/two", [("Cookie", f"referral={cookie}")])
    assert r.all("X-Referral-Conversion") == []
    events = wait_events(rc, 3)
    convs = [e for e in events if e["type"] == "conversion"]
    assert len(convs) == 2
    assert [(c["action"], c["user"], c["amount"], c["currency"], c["order"]) for c in convs] == \
        [("signup", "7", "", "", ""), ("subscribe", "7", "500", "eur", "o-7")]
    assert {c["visitor"] for c in convs} == {seen["visitor"]}
    assert len({c["id"] for c in convs}) == 2


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_conversion_is_stripped_logged_and_not_recorded(shop, rc, case):
    before = referral_status(shop.port)
    mark = len(shop.log())
    r = http_request(shop.port, f"/app/bad/{case}")
    assert r.status == 200 and r.body == "ok\n", "a malformed header never fails the request"
    assert r.all("X-Referral-Conversion") == [], "stripped even when malformed"
    http_request(shop.port, "/?ref=sentinel")
    events = wait_events(rc, 1)
    assert [e["type"] for e in events] == ["click"], f"malformed recorded: {events}"
    warns = [l for l in shop.log()[mark:].splitlines()
             if "[warn]" in l and "conversion" in l.lower()]
    assert warns, "a malformed conversion header is logged at warn:\n" + shop.log()[mark:]
    after = referral_status(shop.port)
    assert after["malformed_conversions"] == before["malformed_conversions"] + 1
    assert after["conversions"] == before["conversions"]


def test_malformed_line_next_to_a_valid_one_only_drops_the_malformed(shop, rc):
    r = http_request(shop.port, "/app/mixed")
    assert r.all("X-Referral-Conversion") == []
    events = wait_events(rc, 1)
    assert [(e["type"], e["user"]) for e in events] == [("conversion", "8")]


def test_conversion_on_an_error_response_is_stripped_and_recorded(shop, rc):
    r = http_request(shop.port, "/app/error")
    assert r.status == 500
    assert r.all("X-Referral-Conversion") == []
    events = wait_events(rc, 1)
    assert [(e["type"], e["user"]) for e in events] == [("conversion", "9")]


def test_conversion_header_forged_by_the_client_has_no_effect(edge, rc):
    n = edge(server=PROXY, backend=BACKEND)
    forged = [("X-Referral-Conversion", "subscribe; user=666; amount=100000; currency=usd")]
    r1 = http_request(n.port, "/", forged)                      # referral on, return 200
    r2 = http_request(n.port, "/app/echo", forged)              # proxied, backend adds none
    assert r1.status == 200 and r2.status == 200
    assert r1.all("X-Referral-Conversion") == [] and r2.all("X-Referral-Conversion") == []
    http_request(n.port, "/?ref=sentinel")
    events = wait_events(rc, 1)
    assert [e["type"] for e in events] == ["click"], events
    assert referral_status(n.port)["conversions"] == 0


def test_conversion_header_name_is_configurable(edge, rc):
    n = edge(server=PROXY.replace("referral on;", "referral on; referral_conversion_header X-Conv;"),
             backend=BACKEND)
    r = http_request(n.port, "/app/custom")
    assert r.all("X-Conv") == [], "the configured header is consumed"
    assert r.all("X-Referral-Conversion") == ["signup; user=12"], \
        "the default name is no longer special"
    events = wait_events(rc, 1)
    assert [(e["type"], e["user"]) for e in events] == [("conversion", "11")]


def test_conversion_header_off_passes_the_header_through(edge, rc):
    n = edge(server=PROXY.replace("referral on;", "referral on; referral_conversion_header off;"),
             backend=BACKEND)
    r = http_request(n.port, "/app/signup?user=3")
    assert r.all("X-Referral-Conversion") == ["signup; user=3"]
    http_request(n.port, "/?ref=sentinel")
    events = wait_events(rc, 1)
    assert [e["type"] for e in events] == ["click"]


def test_location_without_referral_does_not_touch_the_header(edge, rc):
    n = edge(server="""
        location /plain/ { proxy_pass http://127.0.0.1:{backend}/; }
""", backend=BACKEND)
    r = http_request(n.port, "/plain/signup?user=4")
    assert r.all("X-Referral-Conversion") == ["signup; user=4"]
    http_request(n.port, "/?ref=sentinel")
    assert [e["type"] for e in wait_events(rc, 1)] == ["click"]


def test_conversion_counter_moves(shop, rc):
    before = referral_status(shop.port)["conversions"]
    http_request(shop.port, "/app/two")
    http_request(shop.port, "/app/signup?user=2")
    wait_events(rc, 3)
    assert referral_status(shop.port)["conversions"] == before + 3


def test_conversion_body_reaches_the_client_unchanged(shop):
    r = http_request(shop.port, "/app/subscribe")
    assert r.body == "ok\n"
    assert r.header("Content-Length") == "3"


NAMES_BACKEND = """
        location /lower {
            add_header x-referral-conversion "signup; user=21" always;
            return 200 "ok\\n";
        }
        location /similar {
            add_header X-Referral-Conversion-Extra "signup; user=22" always;
            add_header X-Referral-Conversions "signup; user=23" always;
            return 200 "ok\\n";
        }
        location /many {
""" + "".join(f'            add_header X-Referral-Conversion "signup; user=m{i}" always;\n'
              for i in range(40)) + """
            return 200 "ok\\n";
        }
"""


def test_conversion_header_name_is_matched_case_insensitively(edge, rc):
    n = edge(server=PROXY, backend=NAMES_BACKEND)
    r = http_request(n.port, "/app/lower")
    assert [k for k, _ in r.headers if k.lower() == "x-referral-conversion"] == []
    assert [(e["type"], e["user"]) for e in wait_events(rc, 1)] == [("conversion", "21")]


def test_headers_with_similar_names_are_left_alone(edge, rc):
    n = edge(server=PROXY, backend=NAMES_BACKEND)
    r = http_request(n.port, "/app/similar")
    assert r.all("X-Referral-Conversion-Extra") == ["signup; user=22"]
    assert r.all("X-Referral-Conversions") == ["signup; user=23"]
    http_request(n.port, "/?ref=sentinel")
    assert [e["type"] for e in wait_events(rc, 1)] == ["click"]


def test_forty_conversion_lines_make_forty_events_in_order(edge, rc):
    n = edge(server=PROXY, backend=NAMES_BACKEND)
    r = http_request(n.port, "/app/many")
    assert r.all("X-Referral-Conversion") == []
    events = wait_events(rc, 40)
    assert [e["user"] for e in events] == [f"m{i}" for i in range(40)]
    assert len({e["id"] for e in events}) == 40


def test_a_cached_response_does_not_record_its_conversion_again(edge, rc):
    """With proxy_cache, the backend reported the signup once: the cached
    copies served afterwards are stripped but record nothing."""
    n = edge(http="    proxy_cache_path {dir}/cache keys_zone=conv:1m;",
             server="""
        location /cached/ {
            referral on;
            proxy_cache conv;
            proxy_cache_valid 200 1m;
            proxy_pass http://127.0.0.1:{backend}/;
        }
""", backend=BACKEND)
    for _ in range(3):
        r = http_request(n.port, "/cached/signup?user=77")
        assert r.status == 200 and r.all("X-Referral-Conversion") == []
    http_request(n.port, "/?ref=sentinel")
    events = wait_events(rc, 2)
    assert [(e["type"], e.get("user", "")) for e in events] == [("conversion", "77"), ("click", "")]
