// Unit tests for the XADD encoding of events (core/event.h).
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

// cmocka 1.1 declares its functions without extern "C".
extern "C" {
#include <cmocka.h>
}

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "core/conversion.h"
#include "core/decimal.h"
#include "core/event.h"

using referral::Conversion;
using referral::Event;

namespace {

// A strict RESP array-of-bulk-strings parser. Returns false on any framing
// error or trailing bytes.
bool parse_resp(std::string_view in, std::vector<std::string>* out) {
    out->clear();
    auto number = [&](std::size_t* pos, long long* v) {
        std::size_t p = *pos;
        if (p >= in.size() || in[p] < '0' || in[p] > '9') return false;
        if (in[p] == '0' && p + 1 < in.size() && in[p + 1] != '\r') return false;
        long long n = 0;
        while (p < in.size() && in[p] >= '0' && in[p] <= '9') {
            n = n * 10 + (in[p] - '0');
            if (n > (1LL << 40)) return false;
            p++;
        }
        if (p + 2 > in.size() || in[p] != '\r' || in[p + 1] != '\n') return false;
        *pos = p + 2;
        *v = n;
        return true;
    };
    std::size_t pos = 0;
    if (in.empty() || in[0] != '*') return false;
    pos = 1;
    long long argc = 0;
    if (!number(&pos, &argc)) return false;
    for (long long i = 0; i < argc; i++) {
        if (pos >= in.size() || in[pos] != '$') return false;
        pos++;
        long long len = 0;
        if (!number(&pos, &len)) return false;
        if (pos + static_cast<std::size_t>(len) + 2 > in.size()) return false;
        out->emplace_back(in.substr(pos, static_cast<std::size_t>(len)));
        pos += static_cast<std::size_t>(len);
        if (in[pos] != '\r' || in[pos + 1] != '\n') return false;
        pos += 2;
    }
    return pos == in.size();
}

std::string encode(std::string_view stream, const Event& e) {
    const referral::Xadd xadd(stream, e);
    std::size_t n = xadd.size();
    // Guard bytes after the announced size catch any overrun.
    std::string buf(n + 16, '#');
    std::size_t w = xadd.encode(&buf[0]);
    assert_int_equal(w, n);
    for (std::size_t i = n; i < buf.size(); i++) assert_int_equal(buf[i], '#');
    buf.resize(w);
    return buf;
}

std::vector<std::string> decode(const std::string& wire) {
    std::vector<std::string> args;
    if (!parse_resp(wire, &args)) fail_msg("not a RESP array: %s", wire.c_str());
    return args;
}

Event click() {
    Event e;
    e.id = "0123456789abcdef0123456789abcdef";
    e.type = "click";
    e.ts_ms = 1700000000123;
    e.code = "alice-42";
    e.visitor = "fedcba9876543210fedcba9876543210";
    e.first_ts_ms = 1700000000000;
    e.ip = "203.0.113.7";
    e.ua = "Mozilla/5.0 (X11; Linux x86_64)";
    e.url = "/signup?ref=alice-42";
    e.referer = "https://example.org/post";
    e.host = "shop.example.com";
    return e;
}

const char* kClickFields[] = {"v", "id", "type", "ts", "code", "visitor", "first_ts",
                              "ip", "ua", "url", "referer", "host"};

void test_click(void**) {
    Event e = click();
    std::vector<std::string> a = decode(encode("referral:events", e));
    assert_int_equal(a.size(), 3 + 2 * 12);
    assert_string_equal(a[0].c_str(), "XADD");
    assert_string_equal(a[1].c_str(), "referral:events");
    assert_string_equal(a[2].c_str(), "*");
    for (std::size_t i = 0; i < 12; i++) {
        assert_string_equal(a[3 + 2 * i].c_str(), kClickFields[i]);
    }
    assert_string_equal(a[4].c_str(), "1");
    assert_string_equal(a[6].c_str(), "0123456789abcdef0123456789abcdef");
    assert_string_equal(a[8].c_str(), "click");
    assert_string_equal(a[10].c_str(), "1700000000123");
    assert_string_equal(a[12].c_str(), "alice-42");
    assert_string_equal(a[14].c_str(), "fedcba9876543210fedcba9876543210");
    assert_string_equal(a[16].c_str(), "1700000000000");
    assert_string_equal(a[18].c_str(), "203.0.113.7");
    assert_string_equal(a[20].c_str(), "Mozilla/5.0 (X11; Linux x86_64)");
    assert_string_equal(a[22].c_str(), "/signup?ref=alice-42");
    assert_string_equal(a[24].c_str(), "https://example.org/post");
    assert_string_equal(a[26].c_str(), "shop.example.com");
}

void test_exact_wire(void**) {
    Event e;
    e.id = "0123456789abcdef0123456789abcdef";
    e.type = "click";
    e.ts_ms = 5;
    e.code = "abcd";
    std::string wire = encode("s", e);
    const char* expect =
        "*27\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n"
        "$1\r\nv\r\n$1\r\n1\r\n"
        "$2\r\nid\r\n$32\r\n0123456789abcdef0123456789abcdef\r\n"
        "$4\r\ntype\r\n$5\r\nclick\r\n"
        "$2\r\nts\r\n$1\r\n5\r\n"
        "$4\r\ncode\r\n$4\r\nabcd\r\n"
        "$7\r\nvisitor\r\n$0\r\n\r\n"
        "$8\r\nfirst_ts\r\n$0\r\n\r\n"
        "$2\r\nip\r\n$0\r\n\r\n"
        "$2\r\nua\r\n$0\r\n\r\n"
        "$3\r\nurl\r\n$0\r\n\r\n"
        "$7\r\nreferer\r\n$0\r\n\r\n"
        "$4\r\nhost\r\n$0\r\n\r\n";
    assert_int_equal(wire.size(), std::strlen(expect));
    assert_memory_equal(wire.data(), expect, wire.size());
}

void test_conversion(void**) {
    Conversion c{};
    const char* header = "subscribe; user=42; amount=999; currency=usd; order=in_1Nx; customer=cus_9s6X";
    assert_null(referral::parse_conversion(header, &c));
    Event e = click();
    e.type = "conversion";
    e.conversion = &c;
    std::vector<std::string> a = decode(encode("referral:events", e));
    assert_int_equal(a.size(), 3 + 2 * 18);
    const char* fields[] = {"v", "id", "type", "ts", "code", "visitor", "first_ts",
                            "ip", "ua", "url", "referer", "host",
                            "action", "user", "amount", "currency", "order", "customer"};
    for (std::size_t i = 0; i < 18; i++) {
        assert_string_equal(a[3 + 2 * i].c_str(), fields[i]);
    }
    assert_string_equal(a[8].c_str(), "conversion");
    assert_string_equal(a[28].c_str(), "subscribe");
    assert_string_equal(a[30].c_str(), "42");
    assert_string_equal(a[32].c_str(), "999");
    assert_string_equal(a[34].c_str(), "usd");
    assert_string_equal(a[36].c_str(), "in_1Nx");
    assert_string_equal(a[38].c_str(), "cus_9s6X");

    // Absent optional fields are sent empty, never dropped: fixed positions.
    Conversion s{};
    assert_null(referral::parse_conversion("signup; user=u-7", &s));
    e.conversion = &s;
    e.code = "";
    e.visitor = "";
    e.first_ts_ms = 0;
    a = decode(encode("k", e));
    assert_int_equal(a.size(), 39);
    assert_string_equal(a[12].c_str(), "");
    assert_string_equal(a[14].c_str(), "");
    assert_string_equal(a[16].c_str(), "");  // first_ts 0: no attribution
    assert_string_equal(a[27].c_str(), "action");
    assert_string_equal(a[28].c_str(), "signup");
    assert_string_equal(a[30].c_str(), "u-7");
    assert_string_equal(a[31].c_str(), "amount");
    assert_string_equal(a[32].c_str(), "");
    assert_string_equal(a[34].c_str(), "");
    assert_string_equal(a[35].c_str(), "order");
    assert_string_equal(a[36].c_str(), "");
    assert_string_equal(a[37].c_str(), "customer");
    assert_string_equal(a[38].c_str(), "");
}

void test_size_matches(void**) {
    // Many shapes, including lengths around decimal-digit boundaries.
    std::string big(5000, 'x');
    Conversion c{"a", "b", "-1", "usd", "o", "cus_1"};
    for (std::size_t len : {0u, 1u, 9u, 10u, 11u, 99u, 100u, 101u, 511u, 512u, 513u,
                            999u, 1000u, 1023u, 1024u, 1025u, 2047u, 2048u, 2049u, 5000u}) {
        for (bool conv : {false, true}) {
            Event e = click();
            std::string_view v(big.data(), len);
            e.ua = v;
            e.url = v;
            e.referer = v;
            e.host = v;
            e.ip = v;
            e.code = v.substr(0, len > 64 ? 64 : len);
            e.conversion = conv ? &c : nullptr;
            e.ts_ms = static_cast<std::int64_t>(len) * 1000003;
            e.first_ts_ms = static_cast<std::int64_t>(len);
            std::string stream(len % 97, 's');
            std::string wire = encode(stream, e);  // asserts size == written
            std::vector<std::string> a = decode(wire);
            assert_int_equal(a.size(), conv ? 39 : 27);
            assert_true(a[1] == stream);
        }
    }
    // Extreme timestamps, and both sides of every power of ten (the
    // encoder writes two digits at a time).
    std::vector<std::int64_t> stamps = {0, -1, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1};
    for (std::int64_t p = 1; p <= INT64_MAX / 10; p *= 10) {
        for (std::int64_t ts : {p - 1, p, p + 1, 10 * p - 1}) {
            stamps.push_back(ts);
            stamps.push_back(-ts);
        }
    }
    for (std::int64_t ts : stamps) {
        Event e = click();
        e.ts_ms = ts;
        e.first_ts_ms = ts;
        std::vector<std::string> a = decode(encode("s", e));
        assert_true(a[10] == std::to_string(ts));
        assert_true(a[16] == (ts > 0 ? std::to_string(ts) : std::string()));
    }
}

void test_cuts(void**) {
    std::string ua(600, 'u');
    std::string url(3000, 'l');
    std::string ref(2049, 'r');
    std::string host(2000, 'h');
    std::string ip(100, '1');
    Event e = click();
    e.ua = ua;
    e.url = url;
    e.referer = ref;
    e.host = host;
    e.ip = ip;
    std::vector<std::string> a = decode(encode("s", e));
    assert_int_equal(a[20].size(), 512);
    assert_int_equal(a[22].size(), 2048);
    assert_int_equal(a[24].size(), 2048);
    assert_int_equal(a[26].size(), referral::kHostMaxLen);
    assert_int_equal(a[18].size(), referral::kIpMaxLen);
    assert_true(a[20] == ua.substr(0, 512));
    assert_true(a[22] == url.substr(0, 2048));
    // At the limit: kept whole.
    std::string ua512(512, 'U'), url2048(2048, 'L');
    e.ua = ua512;
    e.url = url2048;
    e.referer = url2048;
    a = decode(encode("s", e));
    assert_true(a[20] == ua512);
    assert_true(a[22] == url2048);
    assert_true(a[24] == url2048);
    // The cut keeps the prefix (distinct content so a wrong offset shows).
    std::string mixed;
    for (int i = 0; i < 700; i++) mixed.push_back(static_cast<char>('a' + i % 26));
    e.ua = mixed;
    a = decode(encode("s", e));
    assert_true(a[20] == mixed.substr(0, 512));
}

void test_binary_safe(void**) {
    const std::string evil_ua = std::string("A\r\n$3\r\nSET\r\n*1\r\n\0\xff", 18);
    const std::string evil_url = "/x\r\n\r\n";
    const std::string evil_ref = "\n\n\n";
    const std::string evil_host = "\r";
    Conversion c{"signup", "u\r\n", "", "", "\r\n*", ""};
    Event e = click();
    e.ua = evil_ua;
    e.url = evil_url;
    e.referer = evil_ref;
    e.host = evil_host;
    e.conversion = &c;
    std::string wire = encode("str\r\neam", e);
    std::vector<std::string> a = decode(wire);
    assert_int_equal(a.size(), 39);
    assert_true(a[1] == "str\r\neam");
    assert_true(a[20] == evil_ua);
    assert_int_equal(a[20].size(), 18);
    assert_true(a[22] == evil_url);
    assert_true(a[24] == evil_ref);
    assert_true(a[26] == evil_host);
    assert_true(a[30] == "u\r\n");
    assert_true(a[36] == "\r\n*");
    // A value of only CR/LF, cut exactly between CR and LF at the limit.
    std::string crlf;
    while (crlf.size() < 600) crlf += "\r\n";
    e.ua = crlf;
    a = decode(encode("s", e));
    assert_int_equal(a[20].size(), 512);
    assert_true(a[20] == crlf.substr(0, 512));
}

}  // namespace

// core/decimal.h, which the encoder, the cookie and the journal share:
// against std::to_string on both sides of every power of ten, the ends of
// the range and a spread of values in between.
void test_decimal(void**) {
    std::vector<std::uint64_t> values = {0, UINT64_MAX, UINT64_MAX - 1};
    for (std::uint64_t p = 1; p <= UINT64_MAX / 10; p *= 10) {
        for (std::uint64_t v : {p - 1, p, p + 1, 10 * p - 1}) values.push_back(v);
    }
    std::uint64_t x = 88172645463325252ULL;  // xorshift64
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        values.push_back(x >> (i % 64));
    }
    for (std::uint64_t v : values) {
        char buf[referral::kMaxDecimalLen + 2];
        std::memset(buf, '#', sizeof(buf));
        const std::size_t n = referral::write_decimal(v, buf + 1);
        const std::string want = std::to_string(v);
        assert_int_equal(n, want.size());
        assert_int_equal(referral::decimal_len(v), want.size());
        assert_true(std::string(buf + 1, n) == want);
        assert_int_equal(buf[0], '#');  // nothing written outside
        assert_int_equal(buf[n + 1], '#');
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_click),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_exact_wire),
        cmocka_unit_test(test_conversion),
        cmocka_unit_test(test_size_matches),
        cmocka_unit_test(test_cuts),
        cmocka_unit_test(test_binary_safe),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
