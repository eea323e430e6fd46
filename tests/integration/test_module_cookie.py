"""The signed attribution cookie (SPEC "The attribution cookie", directives
referral_cookie_*, referral_window, referral_secret): attributes, tamper
resistance, expiry and key rotation."""

import re
import time

from harness import (ECHO, HEX32, echoed, http_request, referral_status,
                     reload_and_wait, self_signed_cert)

CODE = "cookie_code-1"
# characters a cookie value may hold without quoting (RFC 6265 cookie-octet)
COOKIE_OCTET = re.compile(r'^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+$')
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def click(port, code=CODE, cookie=None, name="referral", path="/", tls=False):
    headers = [("Cookie", f"{name}={cookie}")] if cookie else []
    return http_request(port, f"{path}?ref={code}", headers, tls=tls)


def with_cookie(port, value, name="referral", path="/"):
    return http_request(port, path, [("Cookie", f"{name}={value}")])


def test_default_cookie_attributes(edge):
    n = edge()
    c = click(n.port).cookie()
    assert c is not None
    assert c.raw == f"referral={c.value}; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax"


def test_cookie_value_is_short_and_needs_no_quoting(edge):
    n = edge()
    c = click(n.port, "L" * 64).cookie()
    assert len(c.value) <= 200
    assert COOKIE_OCTET.match(c.value), c.value


def test_cookie_holds_no_personal_data(edge):
    n = edge()
    r = http_request(n.port, f"/?ref={CODE}",
                     [("User-Agent", "SecretAgent/1.0"), ("X-Forwarded-For", "198.51.100.9")])
    v = r.cookie().value
    assert "SecretAgent" not in v and "127.0.0.1" not in v and "198.51.100.9" not in v


def test_configured_cookie_name_domain_path_window_and_flags(edge):
    n = edge(server="""
        location /shop/ {
            referral on;
            referral_cookie_name ref_attr;
            referral_cookie_domain .example.com;
            referral_cookie_path /shop/;
            referral_cookie_flags secure httponly samesite=strict;
            referral_window 1h;
            %s
        }
""" % ECHO)
    r = click(n.port, path="/shop/item")
    assert r.cookie("referral") is None
    c = r.cookie("ref_attr")
    assert c is not None, r.headers
    assert c.attr("Max-Age") == "3600"
    assert c.attr("Domain") == ".example.com"
    assert c.attr("Path") == "/shop/"
    assert c.attr("Secure") is True
    assert c.attr("HttpOnly") is True
    assert c.attr("SameSite") == "Strict"
    assert sorted(c.names()) == sorted(["max-age", "domain", "path", "secure",
                                        "httponly", "samesite"])
    # the renamed cookie is the one that is read back
    r2 = with_cookie(n.port, c.value, name="ref_attr", path="/shop/x")
    assert echoed(r2)["status"] == "cookie"


def test_samesite_none_without_httponly(edge):
    n = edge(server="""
        location /embed { referral on; referral_cookie_flags samesite=none; %s }
""" % ECHO)
    c = click(n.port, path="/embed").cookie()
    assert c.attr("SameSite") == "None"
    assert c.attr("HttpOnly") is None, "flags replace the default set"


def test_window_sets_max_age(edge):
    n = edge(http="    referral_window 7d;")
    c = click(n.port).cookie()
    assert c.attr("Max-Age") == str(7 * 86400)


def test_secure_is_added_on_https(edge):
    n = edge(server="""
        listen 127.0.0.1:{backend} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/cert.key;
""", start=False)
    self_signed_cert(n.dir)
    n.start()
    plain = click(n.port).cookie()
    assert plain.attr("Secure") is None, "plain http gets no Secure by default"
    secure = click(n.backend_port, tls=True).cookie()
    assert secure is not None
    assert secure.attr("Secure") is True
    assert secure.attr("HttpOnly") is True and secure.attr("SameSite") == "Lax"


def test_every_altered_byte_makes_the_cookie_invalid(edge):
    n = edge()
    first = click(n.port)
    value = first.cookie().value
    visitor = echoed(first)["visitor"]
    before = referral_status(n.port)["rejected_cookies"]
    sent = 0
    failures = []
    for i, ch in enumerate(value):
        # one change of the low bits, one of the high bits: both must be caught
        if ch in ALPHABET:
            k = ALPHABET.index(ch)
            subs = {ALPHABET[k ^ 1], ALPHABET[k ^ 32]}
        else:
            subs = {"A", "_"}
        for sub in sorted(subs):
            altered = value[:i] + sub + value[i + 1:]
            r = with_cookie(n.port, altered)
            sent += 1
            got = echoed(r)
            if got != {"status": "invalid", "code": "", "visitor": ""}:
                failures.append((i, ch, sub, got))
    assert not failures, f"altered cookies accepted (pos, was, now, answer): {failures}"
    assert referral_status(n.port)["rejected_cookies"] == before + sent
    # the original still works
    assert echoed(with_cookie(n.port, value))["visitor"] == visitor


def test_truncated_or_extended_cookie_is_invalid(edge):
    n = edge()
    value = click(n.port).cookie().value
    for altered in (value[:-1], value + "A", value[1:], "", value[: len(value) // 2],
                    value + value, "x" * 201, value.upper() if value != value.upper() else value.lower()):
        r = with_cookie(n.port, altered)
        assert echoed(r)["visitor"] == "", f"accepted {altered!r}"
        assert echoed(r)["code"] == ""


def test_altered_cookie_with_a_valid_code_starts_a_new_visitor(edge):
    n = edge()
    first = click(n.port)
    value = first.cookie().value
    altered = value[:-1] + ("A" if value[-1] != "A" else "B")
    before = referral_status(n.port)["rejected_cookies"]
    r = click(n.port, "second_code", altered)
    got = echoed(r)
    assert got["status"] == "new"
    assert got["code"] == "second_code"
    assert HEX32.match(got["visitor"]) and got["visitor"] != echoed(first)["visitor"]
    assert r.cookie().value != altered
    assert referral_status(n.port)["rejected_cookies"] == before + 1


def test_cookie_signed_with_an_unknown_key_is_rejected(edge, make_nginx, redis):
    n = edge()
    value = click(n.port).cookie().value
    other = make_nginx(f"""
    referral_redis 127.0.0.1:{redis.port};
    referral_secret {{dir}}/keys/other;
    server {{ listen 127.0.0.1:{{port}}; location / {{ referral on; {ECHO} }} }}
""", start=False)
    other.key(b"B" * 40, "other")
    other.start()
    assert echoed(with_cookie(other.port, value)) == {"status": "invalid", "code": "",
                                                        "visitor": ""}


def rotation_conf(redis, keys):
    secrets = "\n".join(f"    referral_secret {{dir}}/keys/{k};" for k in keys)
    return f"""
    referral_redis 127.0.0.1:{redis.port};
{secrets}
    server {{
        listen 127.0.0.1:{{port}};
        location = /status {{ referral_status; }}
        location / {{ referral on; {ECHO} }}
    }}
"""


def test_key_rotation_old_key_verifies_new_key_signs(make_nginx, redis):
    n = make_nginx(rotation_conf(redis, ["a"]), start=False)
    n.key(b"A" * 40, "a")
    n.key(b"B" * 48, "b")
    n.start()
    old = click(n.port)
    old_cookie = old.cookie().value

    # rotate: B signs, A still verifies
    n.write(rotation_conf(redis, ["b", "a"]))
    reload_and_wait(n)
    got = echoed(with_cookie(n.port, old_cookie))
    assert got == {"status": "cookie", "code": CODE, "visitor": echoed(old)["visitor"]}, \
        "a cookie signed by the old key, still listed, verifies"
    new_cookie = click(n.port, "after_rotation").cookie().value

    # retire A: the new cookie (signed by B) still verifies, the old one not
    n.write(rotation_conf(redis, ["b"]))
    reload_and_wait(n)
    assert echoed(with_cookie(n.port, old_cookie))["status"] == "invalid", \
        "once A is removed its cookies are refused"
    got_new = echoed(with_cookie(n.port, new_cookie))
    assert got_new["status"] == "cookie" and got_new["code"] == "after_rotation", \
        "cookies made after the rotation are signed with the first key (B)"


def test_new_cookies_are_signed_with_the_first_key_only(make_nginx, redis):
    """B then A: a cookie made now verifies under B alone, not under A alone."""
    n = make_nginx(rotation_conf(redis, ["b", "a"]), start=False)
    n.key(b"A" * 40, "a")
    n.key(b"B" * 40, "b")
    n.start()
    value = click(n.port).cookie().value
    only_a = make_nginx(rotation_conf(redis, ["a"]), start=False)
    only_a.key(b"A" * 40, "a")
    only_a.start()
    only_b = make_nginx(rotation_conf(redis, ["b"]), start=False)
    only_b.key(b"B" * 40, "b")
    only_b.start()
    assert echoed(with_cookie(only_b.port, value))["status"] == "cookie"
    assert echoed(with_cookie(only_a.port, value))["status"] == "invalid"


def test_expired_cookie_is_treated_as_absent_and_counted(edge):
    n = edge(http="    referral_window 2s;")
    first = click(n.port)
    c = first.cookie()
    assert c.attr("Max-Age") == "2"
    assert echoed(with_cookie(n.port, c.value))["status"] == "cookie"
    time.sleep(2.6)
    before = referral_status(n.port)["rejected_cookies"]
    assert echoed(with_cookie(n.port, c.value)) == {"status": "invalid", "code": "",
                                                     "visitor": ""}
    assert referral_status(n.port)["rejected_cookies"] == before + 1
    r = click(n.port, "late_code", c.value)
    got = echoed(r)
    assert got["status"] == "new", "an expired cookie is not kept under first attribution"
    assert got["code"] == "late_code"
    assert got["visitor"] != echoed(first)["visitor"]


def test_cookie_among_other_cookies_and_header_lines(edge):
    n = edge()
    first = click(n.port)
    value = first.cookie().value
    visitor = echoed(first)["visitor"]
    cases = [
        [("Cookie", f"a=1; referral={value}; b=2")],
        [("Cookie", f"a=1;referral={value}")],
        [("Cookie", "a=1; b=2"), ("Cookie", f"referral={value}")],
        [("Cookie", f"x_referral=junk; referral={value}; referral_x=junk")],
        [("Cookie", "; ".join(f"c{i}=v{i}" for i in range(40)) + f"; referral={value}")],
    ]
    for headers in cases:
        r = http_request(n.port, "/", headers)
        assert echoed(r) == {"status": "cookie", "code": CODE, "visitor": visitor}, headers


def test_other_cookies_with_similar_names_are_not_read(edge):
    n = edge()
    value = click(n.port).cookie().value
    r = http_request(n.port, "/", [("Cookie", f"xreferral={value}; referral_old={value}")])
    assert echoed(r) == {"status": "", "code": "", "visitor": ""}


def test_garbage_cookie_values_never_fail_the_request(edge):
    n = edge()
    for junk in ["", "1", "1....", "1.abcd." + "f" * 32 + ".1.", "%00%0d%0a", "\x7f\x80\xff",
                 "2.abcd." + "f" * 32 + ".1700000000000.AAAAAAAAAAAAAAAAAAAAAA",
                 "x" * 4000]:
        r = http_request(n.port, "/", [("Cookie", f"referral={junk}")])
        assert r.status == 200
        assert echoed(r)["visitor"] == ""


def test_visitor_ids_differ_between_new_visitors(edge):
    n = edge()
    ids = {echoed(click(n.port))["visitor"] for _ in range(50)}
    assert len(ids) == 50
    assert all(HEX32.match(v) for v in ids)


def test_key_of_exactly_32_bytes_is_accepted(make_nginx, redis):
    n = make_nginx(rotation_conf(redis, ["k32"]), start=False)
    n.key(b"x" * 32, "k32")
    code, out = n.test_config()
    assert code == 0, out


def test_location_secret_and_cookie_name_override_the_server_ones(edge):
    n = edge(server="""
        location /partner/ {
            referral on;
            referral_secret {dir}/keys/partner;
            referral_cookie_name partner_ref;
            %s
        }
""" % ECHO, start=False)
    n.key(b"P" * 40, "partner")
    n.start()
    main = click(n.port).cookie()
    partner = click(n.port, path="/partner/").cookie("partner_ref")
    assert partner is not None and main.name == "referral"
    # each location verifies with its own key only
    r = http_request(n.port, "/partner/", [("Cookie", f"partner_ref={main.value}")])
    assert echoed(r)["status"] == "invalid"
    r = http_request(n.port, "/partner/", [("Cookie", f"partner_ref={partner.value}")])
    assert echoed(r)["status"] == "cookie"
    assert echoed(with_cookie(n.port, partner.value))["status"] == "invalid"


def test_key_file_readable_only_by_root_is_read_at_configuration_time(edge):
    import os
    import pytest
    if os.geteuid() != 0:
        pytest.skip("needs root: workers run as nobody only under a root master")
    n = edge(start=False)
    key = os.path.join(n.dir, "keys", "key1")
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    n.start()
    r = click(n.port)
    assert echoed(r)["status"] == "new"
    assert echoed(with_cookie(n.port, r.cookie().value))["status"] == "cookie"


def test_a_valid_cookie_after_a_bad_one_of_the_same_name_is_used(edge):
    # Browsers send several cookies of one name when Domain or Path differ.
    n = edge()
    good = click(n.port).cookie().value
    for header in (f"referral=garbage; referral={good}",
                   f"other=1; referral=1.x.y.z.w; x=2; referral={good}"):
        r = http_request(n.port, "/", [("Cookie", header)])
        got = echoed(r)
        assert got["status"] == "cookie", (header, got)
        assert got["code"] == CODE
    # and in a second Cookie header line
    r = http_request(n.port, "/", [("Cookie", "referral=garbage"), ("Cookie", f"referral={good}")])
    assert echoed(r)["status"] == "cookie"
    # no valid one at all: invalid, counted once per request
    before = referral_status(n.port)["rejected_cookies"]
    r = http_request(n.port, "/", [("Cookie", "referral=a; referral=b")])
    assert echoed(r)["status"] == "invalid"
    assert referral_status(n.port)["rejected_cookies"] == before + 1
