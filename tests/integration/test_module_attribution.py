"""Attribution at the edge (SPEC "nginx directives", "The attribution
cookie"): the statuses new / kept / replaced / cookie / invalid, the three
variables, invalid codes, path codes and the variables reaching a backend."""

import time

import pytest

from harness import (ECHO, HEX32, echoed, http_request, referral_status,
                     wait_events)

CODE = "friend_A-42"
OTHER = "other-CODE_7"


def click(port, code=CODE, cookie=None, path="/"):
    headers = [("Cookie", f"referral={cookie}")] if cookie else []
    return http_request(port, f"{path}?ref={code}", headers)


def test_valid_code_without_cookie_makes_a_new_visitor(edge, rc):
    n = edge()
    r = click(n.port)
    v = echoed(r)
    assert r.status == 200
    assert v["status"] == "new"
    assert v["code"] == CODE
    assert HEX32.match(v["visitor"]), v
    c = r.cookie()
    assert c is not None and c.value, r.headers
    events = wait_events(rc, 1)
    assert len(events) == 1
    assert events[0]["type"] == "click"
    assert events[0]["code"] == CODE
    assert events[0]["visitor"] == v["visitor"]


def test_no_code_and_no_cookie_leaves_variables_empty(edge, rc):
    n = edge()
    r = http_request(n.port, "/plain?x=1")
    assert r.status == 200
    assert echoed(r) == {"status": "", "code": "", "visitor": ""}
    assert r.cookie() is None
    # a click afterwards is the only event: the plain request made none
    click(n.port)
    events = wait_events(rc, 1)
    assert [e["url"] for e in events] == [f"/?ref={CODE}"]


def test_valid_cookie_alone_gives_status_cookie(edge, rc):
    n = edge()
    first = click(n.port)
    cookie = first.cookie().value
    r = http_request(n.port, "/page", [("Cookie", f"referral={cookie}")])
    v = echoed(r)
    assert v == {"status": "cookie", "code": CODE, "visitor": echoed(first)["visitor"]}
    # a cookie alone is not a click and needs no new cookie
    assert r.cookie() is None
    click(n.port, "sentinel")
    events = wait_events(rc, 2)
    assert [e["code"] for e in events] == [CODE, "sentinel"]


def test_first_attribution_keeps_the_cookie(edge, rc):
    n = edge()  # referral_attribution defaults to first
    first = click(n.port)
    cookie = first.cookie().value
    r = click(n.port, OTHER, cookie)
    v = echoed(r)
    assert v["status"] == "kept"
    assert v["code"] == CODE, "the code that holds the attribution is the first one"
    assert v["visitor"] == echoed(first)["visitor"]
    again = r.cookie()
    assert again is None or again.value == cookie, "a kept cookie is kept as it is"
    events = wait_events(rc, 2)
    assert len(events) == 2
    # the click records the link that was followed, attributed to the same visitor
    assert events[1]["code"] == OTHER
    assert events[1]["visitor"] == echoed(first)["visitor"]
    assert events[1]["first_ts"] == events[0]["first_ts"]


def test_last_attribution_replaces_code_and_time_keeps_visitor(edge, rc):
    n = edge(http="    referral_attribution last;")
    first = click(n.port)
    cookie = first.cookie().value
    time.sleep(0.05)
    r = click(n.port, OTHER, cookie)
    v = echoed(r)
    assert v["status"] == "replaced"
    assert v["code"] == OTHER
    assert v["visitor"] == echoed(first)["visitor"]
    replaced = r.cookie()
    assert replaced is not None and replaced.value != cookie
    # the new cookie alone now attributes the new code to the same visitor
    r2 = http_request(n.port, "/", [("Cookie", f"referral={replaced.value}")])
    assert echoed(r2) == {"status": "cookie", "code": OTHER, "visitor": v["visitor"]}
    events = wait_events(rc, 2)
    assert len(events) == 2
    assert events[1]["code"] == OTHER and events[1]["visitor"] == v["visitor"]
    assert int(events[1]["first_ts"]) > int(events[0]["first_ts"]), \
        "replaced attribution carries a new time"
    assert int(events[1]["first_ts"]) <= int(events[1]["ts"])


def test_first_attribution_with_the_same_code_again_is_kept(edge, rc):
    n = edge()
    first = click(n.port)
    r = click(n.port, CODE, first.cookie().value)
    assert echoed(r) == {"status": "kept", "code": CODE, "visitor": echoed(first)["visitor"]}


INVALID_CODES = {
    "too_short": "abc",
    "too_long": "a" * 65,
    "dot": "abc.def",
    "bang": "abcd!",
    "space_encoded": "abc%20def",
    "plus": "abc+def",
    "percent_encoded_letter": "%61bcd",
    "utf8": "caf%C3%A9s",
    "raw_utf8": "cafés",
    "crlf": "abcd%0d%0aSet-Cookie:%20x=1",
    "cr": "abcd%0dx",
    "lf": "abcd%0ax",
    "double_quote": "%22abcd%22",
    "single_quote": "'abcd'",
    "raw_double_quote": '"abcd"',
    "angle_brackets": "<script>",
    "empty_after_equals_sign_like": "=abcd",
    "nul": "abcd%00",
}


@pytest.mark.parametrize("case", sorted(INVALID_CODES))
def test_invalid_code_is_ignored_and_counted(edge, rc, case):
    n = edge()
    code = INVALID_CODES[case]
    before = referral_status(n.port)["invalid_codes"]
    target = f"/?ref={code}"
    r = http_request(n.port, target.encode("utf-8").decode("latin-1"))
    assert r.status == 200, "an invalid code never fails the request"
    assert echoed(r) == {"status": "invalid", "code": "", "visitor": ""}
    assert r.cookie() is None, f"no cookie for an invalid code: {r.all('Set-Cookie')}"
    assert all("x=1" not in h for h in r.all("Set-Cookie"))
    assert referral_status(n.port)["invalid_codes"] == before + 1
    click(n.port, "sentinel")
    events = wait_events(rc, 1)
    assert [e["code"] for e in events] == ["sentinel"], "no click event for an invalid code"


@pytest.mark.parametrize("code", ["abcd", "A" * 64, "a-b_", "0000", "Z9_-z9_-"])
def test_codes_at_the_edges_of_the_rule_are_valid(edge, code):
    n = edge()
    r = click(n.port, code)
    assert echoed(r)["status"] == "new"
    assert echoed(r)["code"] == code


def test_invalid_code_with_a_valid_cookie_keeps_the_cookie_attribution(edge):
    n = edge()
    first = click(n.port)
    before = referral_status(n.port)["invalid_codes"]
    r = click(n.port, "ab", first.cookie().value)
    assert echoed(r) == {"status": "cookie", "code": CODE,
                         "visitor": echoed(first)["visitor"]}
    assert referral_status(n.port)["invalid_codes"] == before + 1


def test_path_code_from_a_regex_capture_sets_the_cookie_on_a_302(edge, rc):
    n = edge(server=r"""
        location ~ ^/r/(?<c>\w+)$ { referral on; referral_code $c; return 302 /; }
""")
    r = http_request(n.port, f"/r/{CODE.replace('-', '_')}")
    assert r.status == 302
    c = r.cookie()
    assert c is not None, f"Set-Cookie missing on the 302: {r.headers}"
    # the cookie attributes that code on the next request
    r2 = http_request(n.port, "/", [("Cookie", f"referral={c.value}")])
    assert echoed(r2)["status"] == "cookie"
    assert echoed(r2)["code"] == CODE.replace("-", "_")
    events = wait_events(rc, 1)
    assert len(events) == 1
    assert events[0]["code"] == CODE.replace("-", "_")
    assert events[0]["url"] == f"/r/{CODE.replace('-', '_')}"


def test_path_code_that_is_invalid_gives_a_302_without_cookie(edge):
    n = edge(server=r"""
        location ~ ^/r/(?<c>\w+)$ { referral on; referral_code $c; return 302 /; }
""")
    r = http_request(n.port, "/r/ab")
    assert r.status == 302
    assert r.cookie() is None


def test_code_from_another_argument(edge):
    n = edge(server="""
        location /via { referral on; referral_code $arg_via; %s }
""" % ECHO)
    r = http_request(n.port, f"/via?ref=ignored_code&via={CODE}")
    assert echoed(r)["status"] == "new"
    assert echoed(r)["code"] == CODE


BACKEND_ECHO = """
        location / {
            return 200 "code=$http_x_referral_code status=$http_x_referral_status visitor=$http_x_referral_visitor\\n";
        }
"""
PROXY = """
        location /app/ {
            referral on;
            proxy_set_header X-Referral-Code $referral_code;
            proxy_set_header X-Referral-Status $referral_status;
            proxy_set_header X-Referral-Visitor $referral_visitor;
            proxy_pass http://127.0.0.1:{backend}/;
        }
"""


def test_referral_code_reaches_a_proxied_backend(edge):
    n = edge(server=PROXY, backend=BACKEND_ECHO)
    r = http_request(n.port, f"/app/landing?ref={CODE}")
    assert r.status == 200
    seen = echoed(r)
    assert seen["status"] == "new"
    assert seen["code"] == CODE
    assert HEX32.match(seen["visitor"])
    c = r.cookie()
    assert c is not None, "Set-Cookie is added to the proxied response"
    # the backend saw the same visitor the cookie carries
    r2 = http_request(n.port, "/", [("Cookie", f"referral={c.value}")])
    assert echoed(r2)["visitor"] == seen["visitor"]


def test_cookie_attribution_reaches_a_proxied_backend(edge):
    n = edge(server=PROXY, backend=BACKEND_ECHO)
    first = click(n.port)
    r = http_request(n.port, "/app/account", [("Cookie", f"referral={first.cookie().value}")])
    assert echoed(r) == {"status": "cookie", "code": CODE, "visitor": echoed(first)["visitor"]}


def test_variables_agree_in_every_phase(edge, rc):
    """return (rewrite phase), proxy_set_header (content), access_log (log
    phase), the cookie (header filter) and the event tell the same story."""
    n = edge(http="""
    log_format referral "$referral_status|$referral_code|$referral_visitor";
""", server=PROXY.replace("proxy_pass", "access_log {dir}/logs/referral.log referral; proxy_pass"),
        backend=BACKEND_ECHO)
    r = http_request(n.port, f"/app/x?ref={CODE}")
    seen = echoed(r)
    assert seen["status"] == "new"
    c = r.cookie()
    r2 = http_request(n.port, "/", [("Cookie", f"referral={c.value}")])
    assert echoed(r2)["visitor"] == seen["visitor"]
    events = wait_events(rc, 1)
    assert events[0]["visitor"] == seen["visitor"]
    with open(f"{n.dir}/logs/referral.log") as f:
        logged = f.read().split()
    assert logged == [f"new|{CODE}|{seen['visitor']}"]


def test_referral_off_location_sets_nothing(edge, rc):
    n = edge(server="""
        location /off { referral off; return 200 "off\\n"; }
""")
    r = http_request(n.port, f"/off?ref={CODE}")
    assert r.status == 200 and r.body == "off\n"
    assert r.cookie() is None
    click(n.port, "sentinel")
    events = wait_events(rc, 1)
    assert [e["code"] for e in events] == ["sentinel"]


def test_referral_on_at_server_level_applies_to_its_locations(make_nginx, redis):
    n = make_nginx(f"""
    referral_redis 127.0.0.1:{redis.port};
    server {{
        listen 127.0.0.1:{{port}};
        referral on;
        referral_secret {{dir}}/keys/key1;
        location /a {{ {ECHO} }}
    }}
""")
    r = http_request(n.port, f"/a?ref={CODE}")
    assert echoed(r)["status"] == "new"
    assert r.cookie() is not None


SPA = """
        root {dir}/html;
        location /spa/ { referral on; set $early $referral_visitor; try_files $uri /index.html?$args; }
        location = /index.html {
            referral on;
            return 200 "early=$early status=$referral_status code=$referral_code visitor=$referral_visitor\\n";
        }
        location /gone/ { referral on; set $early $referral_visitor; return 404; }
        error_page 404 /notfound;
        location = /notfound {
            referral on;
            return 200 "early=$early status=$referral_status code=$referral_code visitor=$referral_visitor\\n";
        }
"""


def test_attribution_survives_try_files_internal_redirect(edge, rc):
    """The SPA pattern: the visitor computed before try_files is the one the
    fallback sees, the one in the cookie and the only click."""
    n = edge(server=SPA)
    r = http_request(n.port, f"/spa/deep/link?ref={CODE}")
    got = echoed(r)
    assert got["status"] == "new" and got["code"] == CODE
    assert got["early"] == got["visitor"], got
    click(n.port, "sentinel")
    events = wait_events(rc, 2)
    assert [(e["code"], e["visitor"]) for e in events][:1] == [(CODE, got["visitor"])]
    assert len(events) == 2, f"one click per request: {events}"
    assert echoed(http_request(n.port, "/", [("Cookie", f"referral={r.cookie().value}")]))[
        "visitor"] == got["visitor"]


def test_attribution_survives_error_page_internal_redirect(edge, rc):
    n = edge(server=SPA)
    r = http_request(n.port, f"/gone/page?ref={CODE}")
    got = echoed(r)
    assert got["status"] == "new"
    assert got["early"] == got["visitor"], got
    assert r.cookie() is not None
    click(n.port, "sentinel")
    events = wait_events(rc, 2)
    assert [e["code"] for e in events] == [CODE, "sentinel"]


def test_cookie_is_sent_after_a_redirect_into_a_location_with_referral_off(edge, rc):
    """The click is recorded in the location with referral on; the response
    comes from a location with referral off after try_files: the browser
    must still get the cookie holding the visitor id that was recorded."""
    n = edge(server="""
        location /landing/ { referral on; set $v $referral_visitor; try_files $uri /static/app.html; }
        location /static/ { referral off; return 200 "static"; }
""")
    r = http_request(n.port, f"/landing/x?ref={CODE}")
    assert r.status == 200 and r.body == "static"
    c = r.cookie()
    assert c is not None, r.headers
    events = wait_events(rc, 1)
    assert len(events) == 1
    assert c.value.split(".")[2] == events[0]["visitor"]


def test_a_variable_read_where_referral_is_off_does_not_decide_for_the_location(edge, rc):
    """A server-level `set` reads $referral_code with the server's
    configuration (off); the location with referral on still attributes."""
    n = edge(root=False, server="""
        set $early "[$referral_code]";
        location /on/ { referral on; return 200 "early=$early code=$referral_code"; }
""")
    r = http_request(n.port, f"/on/?ref={CODE}")
    assert r.body == f"early=[] code={CODE}", r.body
    assert r.cookie() is not None
    assert [e["code"] for e in wait_events(rc, 1)] == [CODE]


# ------------------------------------------------------------ referral_skip

SKIP_HTTP = """
    map $http_user_agent $referral_bot { default 0; ~*bot 1; }
"""
SKIP_BACKEND = """
        location /signup {
            add_header X-Referral-Conversion "signup; user=$arg_user" always;
            return 200 "ok\\n";
        }
"""


def test_skip_reads_nothing_sets_nothing_records_no_click(edge, rc):
    n = edge(http=SKIP_HTTP,
             server=f"        location /s/ {{ referral on; referral_skip $referral_bot $http_sec_gpc; {ECHO} }}\n"
                    "        location /app/ { referral on; referral_skip $referral_bot;"
                    " proxy_pass http://127.0.0.1:{backend}/; }\n",
             backend=SKIP_BACKEND)
    cookie = click(n.port).cookie().value            # a visitor with a cookie
    bot = [("User-Agent", "Examplebot/1.0"), ("Cookie", f"referral={cookie}")]
    r = http_request(n.port, f"/s/?ref={OTHER}", bot)
    assert echoed(r) == {"status": "skipped", "code": "", "visitor": ""}
    assert r.cookie() is None
    r = http_request(n.port, f"/s/?ref={OTHER}", [("Sec-GPC", "1")])
    assert echoed(r)["status"] == "skipped" and r.cookie() is None
    # "0" and empty values do not skip
    r = http_request(n.port, f"/s/?ref={OTHER}", [("Sec-GPC", "0"), ("User-Agent", "Firefox")])
    assert echoed(r)["status"] == "new"
    # a conversion under skip: stripped, recorded without attribution
    r = http_request(n.port, "/app/signup?user=9", bot)
    assert r.header("X-Referral-Conversion") is None
    events = wait_events(rc, 3)
    assert [e["type"] for e in events] == ["click", "click", "conversion"], events
    assert events[1]["code"] == OTHER                  # the Sec-GPC: 0 request
    conv = events[2]
    assert conv["code"] == "" and conv.get("visitor", "") == "", conv
    st = referral_status(n.port)
    assert st["skipped"] == 3 and st["clicks"] == 2, st


def test_skip_set_at_a_level_replaces_the_outer_one(edge):
    n = edge(http=SKIP_HTTP + "    referral_skip $referral_bot;\n",
             server=f"        location /inner/ {{ referral on; referral_skip $arg_noref; {ECHO} }}\n")
    bot = [("User-Agent", "somebot")]
    assert echoed(http_request(n.port, f"/?ref={CODE}", bot))["status"] == "skipped"
    assert echoed(http_request(n.port, f"/inner/?ref={CODE}", bot))["status"] == "new"
    assert echoed(http_request(n.port, f"/inner/?ref={CODE}&noref=1"))["status"] == "skipped"
