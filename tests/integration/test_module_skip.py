"""referral_skip with the maps nginx.conf.example ships (SPEC "nginx
directives", issue 8): link-preview bots and crawlers, prefetch, Sec-GPC and
a missing consent cookie. The maps and the referral_skip line are read out
of the example itself, so what an operator copies is what is tested. A
skipped request sets no cookie and records no click, even with a valid code
and cookie; a conversion in its response is stripped and recorded without
attribution; the request reaches the backend untouched."""

import os
import re
import shutil
import subprocess

import pytest

import harness
from harness import (CONVERSION_FIELDS, ECHO, HEX32, SOURCE_DIR, echoed, http_request,
                     referral_status, wait_events)

EXAMPLE = os.path.join(SOURCE_DIR, "nginx.conf.example")
CODE = "friend_code_1"
OTHER = "other_code_2"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


def without_comments(text):
    """nginx configuration text without its comments (a # outside quotes)."""
    out, quote = [], None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                out.append(text[i:i + 2])
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def block_end(text, start):
    """Index just past the } that closes the { at or after `start`."""
    depth, quote, i = 0, None, text.index("{", start)
    while True:
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def example_skip():
    """(the example's referral_skip arguments, the text of the maps that
    define them)."""
    text = without_comments(open(EXAMPLE).read())
    lines = re.findall(r"\breferral_skip\s+([^;]+);", text)
    assert len(lines) == 1, f"nginx.conf.example should have one referral_skip: {lines}"
    variables = lines[0].split()
    maps = {}
    for m in re.finditer(r"\bmap\s+(\"[^\"]*\"|\S+)\s+\$(\w+)\s*\{", text):
        maps["$" + m.group(2)] = text[m.start():block_end(text, m.start())]
    missing = [v for v in variables if v not in maps]
    assert not missing, f"referral_skip uses {missing}, which no map of nginx.conf.example defines"
    return lines[0], "\n".join("    " + maps[v] for v in variables)


BACKEND = """
        location /signup {
            add_header X-Referral-Conversion "signup; user=$arg_user" always;
            return 200 "cookie=[$http_cookie] args=[$args] code=[$http_x_referral_code]\\n";
        }
"""


@pytest.fixture
def site(edge):
    """The example's maps and its referral_skip on the tracked server (so
    location / inherits it), ECHO at /, a proxied application at /app/."""
    skip, maps = example_skip()
    return edge(http=maps, backend=BACKEND, server=f"""
        referral_skip {skip};
        location /app/ {{
            referral on;
            proxy_pass http://127.0.0.1:{{backend}}/;
            proxy_set_header X-Referral-Code $referral_code;
        }}
""")


def person(cookie=None, consent="yes", ua=FIREFOX):
    """The headers of a browser that gave consent (and has `cookie`)."""
    cookies = [f"referral={cookie}"] if cookie else []
    if consent is not None:
        cookies.append(f"consent={consent}")
    headers = [("User-Agent", ua)] if ua is not None else []
    if cookies:
        headers.append(("Cookie", "; ".join(cookies)))
    return headers


def cookie_header(headers):
    return dict(headers).get("Cookie", "")


def referred_visitor(n, rc):
    """A consenting visitor follows a link: (cookie value, its click)."""
    r = http_request(n.port, f"/?ref={CODE}", person())
    assert echoed(r)["status"] == "new", r
    click = wait_events(rc, 1, settle=0)[0]
    return r.cookie().value, click


def assert_skipped(n, rc, headers, visitor_cookie):
    """The request is served, unattributed; its conversion is recorded
    without attribution; nothing else changed."""
    r = http_request(n.port, f"/?ref={OTHER}", headers)
    assert r.status == 200
    assert echoed(r) == {"status": "skipped", "code": "", "visitor": ""}, r.body
    assert r.all("Set-Cookie") == [], "no cookie is set (nor cleared)"

    r = http_request(n.port, f"/app/signup?user=u7&ref={OTHER}", headers)
    assert r.status == 200
    assert r.header("X-Referral-Conversion") is None, "the conversion is stripped"
    assert r.all("Set-Cookie") == []
    # the application sees the request as the client sent it, unattributed
    assert r.body == f"cookie=[{cookie_header(headers)}] args=[user=u7&ref={OTHER}] code=[]\n", r.body

    events = wait_events(rc, 2)
    assert [e["type"] for e in events] == ["click", "conversion"], "no click for a skipped request"
    conv = events[1]
    assert set(conv) == CONVERSION_FIELDS
    assert HEX32.match(conv["id"])
    assert {k: conv[k] for k in ("code", "visitor", "first_ts", "action", "user", "url")} == {
        "code": "", "visitor": "", "first_ts": "", "action": "signup", "user": "u7",
        "url": f"/app/signup?user=u7&ref={OTHER}"}, conv
    assert conv["ua"] == dict(headers).get("User-Agent", "")[:512]
    st = referral_status(n.port)
    assert st["skipped"] == 2 and st["clicks"] == 1 and st["conversions"] == 1, st


# Real user agents of the link previews and crawlers the example names.
BOTS = {
    "slack": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "slack_images": "Slack-ImgProxy (+https://api.slack.com/robots)",
    "twitter_x": "Twitterbot/1.0",
    "facebook": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "linkedin": "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "discord": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "whatsapp": "WhatsApp/2.23.20.0 A",
    "telegram": "TelegramBot (like TwitterBot)",
    "google": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "google_smartphone": ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
                          "(KHTML, like Gecko) Chrome/120.0.6099.71 Mobile Safari/537.36 "
                          "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    "bing": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "apple": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "generic_bot": "ExampleBot/3.1 (+https://example.net/bot)",
    "generic_crawler": "Mozilla/5.0 (compatible; SiteCrawler/1.0)",
    "generic_spider": "Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)",
    "generic_preview": "Mozilla/5.0 (compatible; LinkPreview/2.0)",
}


@pytest.mark.parametrize("name", sorted(BOTS))
def test_link_preview_bots_and_crawlers_are_skipped(site, rc, name):
    cookie, _ = referred_visitor(site, rc)
    assert_skipped(site, rc, person(cookie, ua=BOTS[name]), cookie)


PREFETCH = {
    "sec_purpose_prefetch": ("Sec-Purpose", "prefetch"),
    "sec_purpose_prerender": ("Sec-Purpose", "prefetch;prerender"),
    "purpose_prefetch": ("Purpose", "prefetch"),
    "x_purpose_preview": ("X-Purpose", "preview"),
    "x_moz_prefetch": ("X-Moz", "prefetch"),
}


@pytest.mark.parametrize("name", sorted(PREFETCH))
def test_prefetch_is_skipped(site, rc, name):
    cookie, _ = referred_visitor(site, rc)
    assert_skipped(site, rc, person(cookie) + [PREFETCH[name]], cookie)


def test_global_privacy_control_is_skipped(site, rc):
    cookie, _ = referred_visitor(site, rc)
    assert_skipped(site, rc, person(cookie) + [("Sec-GPC", "1")], cookie)


@pytest.mark.parametrize("consent", [None, "no", "", "1", "yes-later"])
def test_without_consent_the_visitor_is_skipped(site, rc, consent):
    """No consent cookie, a refusal, an empty or another value: skipped;
    the referral cookie the visitor has is left alone."""
    cookie, _ = referred_visitor(site, rc)
    assert_skipped(site, rc, person(cookie, consent=consent), cookie)


# People: none of these may be taken for a robot or a prefetch.
PEOPLE = {
    "firefox": [("User-Agent", FIREFOX)],
    "chrome_android": [("User-Agent", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                                      "(KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36")],
    "safari_iphone": [("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) "
                                     "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
                                     "Mobile/15E148 Safari/604.1")],
    "cubot_phone": [("User-Agent", "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 "
                                   "(KHTML, like Gecko) Chrome/118.0.0.0 Mobile Safari/537.36")],
    "curl": [("User-Agent", "curl/7.88.1")],
    "no_user_agent": [],
    "gpc_0": [("User-Agent", FIREFOX), ("Sec-GPC", "0")],
    "sec_purpose_other": [("User-Agent", FIREFOX), ("Sec-Purpose", "navigation")],
}


@pytest.mark.parametrize("name", sorted(PEOPLE))
def test_people_who_gave_consent_are_attributed(site, rc, name):
    headers = PEOPLE[name] + [("Cookie", "consent=yes")]
    r = http_request(site.port, f"/?ref={CODE}", headers)
    v = echoed(r)
    assert v["status"] == "new" and v["code"] == CODE, (name, r.body)
    assert r.cookie() is not None
    r = http_request(site.port, "/app/signup?user=u8",
                     headers[:-1] + [("Cookie", f"consent=yes; referral={r.cookie().value}")])
    assert r.header("X-Referral-Conversion") is None and f"code=[{CODE}]" in r.body, r.body
    click, conv = wait_events(rc, 2)
    assert (click["type"], click["code"]) == ("click", CODE)
    assert (conv["type"], conv["code"], conv["visitor"], conv["first_ts"]) == \
        ("conversion", CODE, v["visitor"], click["ts"])
    assert referral_status(site.port)["skipped"] == 0


def test_the_example_passes_nginx_t(tmp):
    """nginx.conf.example, as ./build.sh run uses it (with the key file and
    the API header file it writes, from a directory holding only those),
    passes `nginx -t`."""
    os.makedirs(os.path.join(tmp, "run", "tmp"))
    os.makedirs(os.path.join(tmp, "build"))
    os.symlink(harness.MODULE, os.path.join(tmp, "build", "ngx_http_referral_module.so"))
    with open(os.path.join(tmp, "run", "referral.key"), "wb") as f:
        f.write(os.urandom(48))
    with open(os.path.join(tmp, "run", "api-auth.conf"), "w") as f:
        f.write('proxy_set_header Authorization "Bearer x";\n')
    shutil.copytree(os.path.join(SOURCE_DIR, "demo"), os.path.join(tmp, "demo"))
    # a copy: nginx finds the key file and includes next to the file itself
    conf = shutil.copy(EXAMPLE, tmp)
    p = subprocess.run([harness.NGINX, "-t", "-p", tmp + "/", "-c", conf,
                        "-e", os.path.join(tmp, "run", "error.log")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "test is successful" in p.stderr


@pytest.mark.parametrize("args,skipped", [
    ("", False), ("a=0", False), ("a=&b=0", False), ("a=0&b=0&c=0", False),
    ("a=1", True), ("b=yes", True), ("c=no", True), ("a=0&b=00", True), ("a=0&c=false", True),
])
def test_skip_values_follow_proxy_no_cache(edge, rc, args, skipped):
    """Several values on one line and several lines at one level: any value
    that is non-empty and not "0" skips, as proxy_no_cache decides."""
    n = edge(root=False, server=f"""
        location / {{ referral on; referral_skip $arg_a $arg_b; referral_skip $arg_c; {ECHO} }}
""")
    r = http_request(n.port, f"/?ref={CODE}&{args}")
    assert echoed(r)["status"] == ("skipped" if skipped else "new"), (args, r.body)
    assert (r.cookie() is None) == skipped
    # one worker keeps the order of its events: a click after it shows
    # whether this request made one
    http_request(n.port, "/?ref=sentinel")
    codes = [e["code"] for e in wait_events(rc, 1 if skipped else 2)]
    assert codes == (["sentinel"] if skipped else [CODE, "sentinel"]), codes
