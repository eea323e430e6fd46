"""`nginx -t` with the module (issue 2, SPEC directive table): a complete
configuration passes; every missing requirement and malformed argument
fails with a message naming the directive."""

import os
import signal
import subprocess

import pytest

import harness
from harness import ECHO, MODULE, Nginx, echoed, http_request, wait_until


@pytest.fixture
def conf(module_built):
    made = []

    def make(http, keys=None):
        n = Nginx(http)
        for name, data in (keys or {}).items():
            n.key(data, name)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


def server(location_body):
    return f"""
    server {{
        listen 127.0.0.1:{{port}};
        location / {{ {location_body} }}
    }}
"""


GOOD = """
    referral_redis 127.0.0.1:6399;
    referral_secret {dir}/keys/key1;
""" + server(f"referral on; {ECHO}")


def test_complete_configuration_passes(conf):
    n = conf("""
    referral_redis 127.0.0.1:6399 password=s3cret db=2;
    referral_stream referral:test;
    referral_buffer 1m;
    referral_spool {dir}/spool;
    referral_secret {dir}/keys/key1;
    referral_secret {dir}/keys/key2;
    referral_code $arg_via;
    referral_cookie_name r;
    referral_cookie_domain .example.com;
    referral_cookie_path /;
    referral_cookie_flags secure httponly samesite=none;
    referral_window 14d;
    referral_attribution last;
    referral_conversion_header X-Conv;
    server {
        listen 127.0.0.1:{port};
        location / { referral on; return 200 "$referral_code"; }
        location /off { referral off; }
        location = /status { referral_status; }
    }
""", keys={"key2": b"2" * 64})
    code, out = n.test_config()
    assert code == 0, out
    assert "test is successful" in out


@pytest.mark.parametrize("mask", ["0", "32", "0 0", "24 48", "32 128", "off"])
def test_ip_mask_bounds_pass(conf, mask):
    """0 bits (nothing of the address kept) to all of them are valid."""
    n = conf(GOOD.replace("referral_redis", f"referral_ip_mask {mask};\n    referral_redis"))
    code, out = n.test_config()
    assert code == 0, out


def test_unix_socket_address_passes(conf):
    n = conf(GOOD.replace("127.0.0.1:6399", "unix:/tmp/referral-test.sock"))
    code, out = n.test_config()
    assert code == 0, out


def test_secret_and_redis_inherited_from_http_level(conf):
    n = conf(GOOD)
    code, out = n.test_config()
    assert code == 0, out


def test_referral_off_needs_neither_secret_nor_redis(conf):
    n = conf(server(f"referral off; {ECHO}"))
    code, out = n.test_config()
    assert code == 0, out


NOSUCH = "(2: No such file or directory)"

FAILURES = {
    # name: (http block, text on the offending line, text the [emerg] line holds)
    "referral_on_without_secret": ("""
    referral_redis 127.0.0.1:6399;
""" + server("referral on;"), "referral on;",
        'no "referral_secret" is defined for the "referral on" directive'),
    "referral_on_at_server_without_secret": ("""
    referral_redis 127.0.0.1:6399;
    server { listen 127.0.0.1:{port}; referral on; location / { return 200; } }
""", "referral on;", 'no "referral_secret" is defined for the "referral on" directive'),
    "referral_on_at_http_without_redis": ("""
    referral_secret {dir}/keys/key1;
    referral on;
""" + server("return 200;"), "referral on;",
        'no "referral_redis" is defined for the "referral on" directive'),
    "referral_on_without_redis": ("""
    referral_secret {dir}/keys/key1;
""" + server("referral on;"), "referral on;", 'no "referral_redis" is defined'),
    "missing_key_file": ("""
    referral_redis 127.0.0.1:6399;
    referral_secret {dir}/keys/does-not-exist;
""" + server("referral on;"), "does-not-exist", f'/keys/does-not-exist" failed {NOSUCH}'),
    "key_shorter_than_32_bytes": ("""
    referral_redis 127.0.0.1:6399;
    referral_secret {dir}/keys/short;
""" + server("referral on;"), "keys/short",
        '/keys/short" in "referral_secret" directive has 31 bytes, it must have 32 to 4096'),
    "empty_key_file": ("""
    referral_redis 127.0.0.1:6399;
    referral_secret {dir}/keys/empty;
""" + server("referral on;"), "keys/empty", '"referral_secret" directive has 0 bytes'),
    "referral_bad_flag": (GOOD.replace("referral on;", "referral maybe;"), "referral maybe",
                          'invalid value "maybe" in "referral" directive'),
    "window_abc": (GOOD.replace("referral on;", "referral on;\n referral_window abc;"),
                   "referral_window abc", '"referral_window" directive invalid value'),
    "window_zero": (GOOD.replace("referral on;", "referral on;\n referral_window 0;"),
                    "referral_window 0", 'invalid value "0" in "referral_window" directive'),
    "window_over_ten_years": (GOOD.replace("referral on;", "referral on;\n referral_window 3651d;"),
                              "referral_window 3651d",
                              'invalid value "3651d" in "referral_window" directive'),
    "attribution_middle": (GOOD.replace("referral on;", "referral on;\n referral_attribution middle;"),
                           "referral_attribution middle", 'invalid value "middle"'),
    "attribution_twice": (GOOD.replace(
        "referral on;", "referral on;\n referral_attribution last;\n referral_attribution first;"),
        "referral_attribution first", '"referral_attribution" directive is duplicate'),
    "cookie_flags_bogus": (GOOD.replace("referral on;", "referral on;\n referral_cookie_flags bogus;"),
                           "referral_cookie_flags", 'invalid value "bogus"'),
    "cookie_flags_samesite_bogus": (GOOD.replace(
        "referral on;", "referral on;\n referral_cookie_flags samesite=sometimes;"),
        "referral_cookie_flags", 'invalid value "samesite=sometimes"'),
    "cookie_flags_two_samesite": (GOOD.replace(
        "referral on;", "referral on;\n referral_cookie_flags secure samesite=lax samesite=none;"),
        "referral_cookie_flags", 'in "referral_cookie_flags" directive, only one samesite'),
    "cookie_flags_off_and_more": (GOOD.replace(
        "referral on;", "referral on;\n referral_cookie_flags off secure;"),
        "referral_cookie_flags", '"off" cannot be combined'),
    "buffer_x": (GOOD.replace("referral_redis", "referral_buffer x;\n    referral_redis"),
                 "referral_buffer", '"referral_buffer" directive invalid value'),
    "buffer_too_small": (GOOD.replace("referral_redis", "referral_buffer 4k;\n    referral_redis"),
                         "referral_buffer", 'invalid value "4k" in "referral_buffer" directive'),
    "stream_too_long": (GOOD.replace("referral_redis", f"referral_stream {'s' * 257};\n    referral_redis"),
                        "referral_stream", 'in "referral_stream" directive'),
    "redis_port_not_a_number": (GOOD.replace("127.0.0.1:6399", "127.0.0.1:redis"),
                                "referral_redis", 'invalid value "127.0.0.1:redis" in "referral_redis"'),
    "redis_port_out_of_range": (GOOD.replace("127.0.0.1:6399", "127.0.0.1:70000"),
                                "referral_redis", 'in "referral_redis" directive'),
    "redis_db_not_a_number": (GOOD.replace("127.0.0.1:6399", "127.0.0.1:6399 db=x"),
                              "referral_redis", 'invalid value "db=x" in "referral_redis" directive'),
    "redis_unknown_option": (GOOD.replace("127.0.0.1:6399", "127.0.0.1:6399 timeout=3"),
                             "referral_redis", 'invalid parameter #2 in "referral_redis" directive'),
    "redis_in_server_context": (GOOD.replace(
        "listen 127.0.0.1:{port};", "listen 127.0.0.1:{port};\n referral_redis 127.0.0.1:1;"),
        "referral_redis 127.0.0.1:1;", '"referral_redis" directive is not allowed here'),
    "stream_in_location": (GOOD.replace("referral on;", "referral on;\n referral_stream x;"),
                           "referral_stream x", '"referral_stream" directive is not allowed here'),
    "status_with_argument": (GOOD.replace("referral on;", "referral_status now;"),
                             "referral_status now", 'invalid number of arguments in "referral_status"'),
    "status_in_http_context": (GOOD.replace("referral_redis", "referral_status;\n    referral_redis"),
                               "referral_status;", '"referral_status" directive is not allowed here'),
    "secret_without_argument": (GOOD.replace("referral on;", "referral on;\n referral_secret;"),
                                "referral_secret;", 'invalid number of arguments in "referral_secret"'),
    "cookie_name_with_bad_chars": (GOOD.replace(
        "referral on;", 'referral on;\n referral_cookie_name "a;b";'), "referral_cookie_name",
        'invalid value "a;b" in "referral_cookie_name" directive'),
    "cookie_path_relative": (GOOD.replace(
        "referral on;", 'referral on;\n referral_cookie_path x/y;'), "referral_cookie_path",
        'invalid value "x/y" in "referral_cookie_path" directive'),
    "conversion_header_bad_name": (GOOD.replace(
        "referral on;", 'referral on;\n referral_conversion_header "X Conv";'),
        "referral_conversion_header", 'invalid value "X Conv" in "referral_conversion_header"'),
    # referral_ip_mask: 0..32 and 0..128 bits, or off
    "ip_mask_v4_over_32": (GOOD.replace("referral on;", "referral on;\n referral_ip_mask 33;"),
                           "referral_ip_mask 33",
                           'invalid value "33" in "referral_ip_mask" directive, it must be a number of bits from 0 to 32'),
    "ip_mask_v6_over_128": (GOOD.replace("referral on;", "referral on;\n referral_ip_mask 24 129;"),
                            "referral_ip_mask 24 129",
                            'invalid value "129" in "referral_ip_mask" directive, it must be a number of bits from 0 to 128'),
    "ip_mask_not_a_number": (GOOD.replace("referral_redis", "referral_ip_mask 24x;\n    referral_redis"),
                             "referral_ip_mask 24x", 'invalid value "24x" in "referral_ip_mask" directive'),
    "ip_mask_negative": (GOOD.replace("listen 127.0.0.1:{port};", "listen 127.0.0.1:{port};\n referral_ip_mask -1 48;"),
                         "referral_ip_mask -1", 'invalid value "-1" in "referral_ip_mask" directive'),
    "ip_mask_v6_not_a_number": (GOOD.replace("referral on;", "referral on;\n referral_ip_mask 24 off;"),
                                "referral_ip_mask 24 off", 'invalid value "off" in "referral_ip_mask" directive'),
    "ip_mask_three_numbers": (GOOD.replace("referral on;", "referral on;\n referral_ip_mask 24 48 64;"),
                              "referral_ip_mask 24 48 64",
                              'invalid number of arguments in "referral_ip_mask" directive'),
    "ip_mask_without_argument": (GOOD.replace("referral on;", "referral on;\n referral_ip_mask;"),
                                 "referral_ip_mask;", 'invalid number of arguments in "referral_ip_mask"'),
    "ip_mask_twice": (GOOD.replace("referral on;", "referral on;\n referral_ip_mask 24;\n referral_ip_mask off;"),
                      "referral_ip_mask off", '"referral_ip_mask" directive is duplicate'),
    "spool_parent_missing": (GOOD.replace(
        "referral_secret", "referral_spool /nonexistent/dir/spool;\n    referral_secret"),
        "referral_spool", f'stat() "/nonexistent/dir" failed {NOSUCH}'),
    "spool_is_a_file": (GOOD.replace(
        "referral_secret", "referral_spool {dir}/keys/key1;\n    referral_secret"),
        "referral_spool", 'in "referral_spool" directive is not a directory'),
}


def line_of(path, needle):
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if needle in line:
                return number
    raise AssertionError(f"{needle!r} is not in {path}")


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_nginx_t_fails_on_the_offending_line(conf, case):
    """nginx's own wording, and the line of the directive at fault (not the
    end of the block being merged), as `nginx -t` reports its own errors."""
    http, needle, message = FAILURES[case]
    n = conf(http, keys={"short": b"s" * 31, "empty": b""})
    code, out = n.test_config()
    assert code != 0, f"nginx -t accepted:\n{http}\n{out}"
    assert "test failed" in out, out
    emerg = [l for l in out.splitlines() if "[emerg]" in l]
    assert len(emerg) == 1, out
    assert message in emerg[0], out
    assert emerg[0].endswith(f" in {n.conf}:{line_of(n.conf, needle)}"), \
        f"line {line_of(n.conf, needle)} expected:\n{emerg[0]}\n{open(n.conf).read()}"


def test_samesite_none_without_secure_warns_on_its_line(conf):
    n = conf(GOOD.replace("referral on;", "referral on;\n referral_cookie_flags samesite=none;"))
    code, out = n.test_config()
    assert code == 0, out
    warn = [l for l in out.splitlines() if "[warn]" in l and "samesite=none" in l]
    assert warn and warn[0].endswith(f":{line_of(n.conf, 'referral_cookie_flags')}"), out


def test_nginx_refuses_to_start_without_secret(conf):
    n = conf(FAILURES["referral_on_without_secret"][0])
    p = subprocess.run([harness.NGINX, "-p", n.dir, "-c", n.conf, "-e", n.error_log],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "referral_secret" in p.stderr + n.log()


def test_module_loads_into_stock_nginx_without_compat_errors(conf):
    n = conf(GOOD)
    code, out = n.test_config()
    assert code == 0, out
    assert "not binary compatible" not in out
    assert os.path.exists(MODULE)


def test_invalid_reload_keeps_the_running_configuration(make_nginx, redis):
    n = make_nginx(GOOD.replace("127.0.0.1:6399", f"127.0.0.1:{redis.port}")
                   .replace("location / {", "location = /status { referral_status; }\n        location / {"))
    assert echoed(http_request(n.port, "/?ref=before"))["status"] == "new"
    good = open(n.conf).read()
    with open(n.conf, "w") as f:
        f.write(good.replace("referral on;", "referral on; referral_window abc;"))
    os.kill(n.proc.pid, signal.SIGHUP)  # `nginx -s reload` would refuse the file itself
    assert wait_until(lambda: "referral_window" in n.log(), timeout=10)
    assert echoed(http_request(n.port, "/?ref=after"))["status"] == "new"
    # the refused reload left an [emerg] line: expected here
    assert "referral_window" in n.log()
    n.expect_bad_line("[emerg]", "referral_window")
