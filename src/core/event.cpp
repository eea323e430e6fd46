#include "core/event.h"

#include <cstring>

namespace referral {
namespace {

std::string_view cut(std::string_view s, std::size_t max) noexcept {
    return s.size() > max ? s.substr(0, max) : s;
}

// Decimal without allocation; `buf` holds at least 21 bytes.
std::string_view decimal(std::int64_t v, char* buf) noexcept {
    char tmp[24];
    std::size_t n = 0;
    bool neg = v < 0;
    std::uint64_t u = neg ? 0 - static_cast<std::uint64_t>(v)
                          : static_cast<std::uint64_t>(v);
    do {
        tmp[n++] = static_cast<char>('0' + u % 10);
        u /= 10;
    } while (u > 0);
    std::size_t o = 0;
    if (neg) buf[o++] = '-';
    while (n > 0) buf[o++] = tmp[--n];
    return std::string_view(buf, o);
}

// Visits every argument of the command in order; the size pass and the
// write pass share it so they cannot disagree.
template <typename F>
void each_arg(std::string_view stream, const Event& e, F&& f) {
    char ts[24], first[24];
    f("XADD");
    f(stream);
    f("*");
    f("v");
    f("1");
    f("id");
    f(e.id);
    f("type");
    f(e.type);
    f("ts");
    f(decimal(e.ts_ms, ts));
    f("code");
    f(e.code);
    f("visitor");
    f(e.visitor);
    f("first_ts");
    f(e.first_ts_ms > 0 ? decimal(e.first_ts_ms, first) : std::string_view());
    f("ip");
    f(cut(e.ip, kIpMaxLen));
    f("ua");
    f(cut(e.ua, kUaMaxLen));
    f("url");
    f(cut(e.url, kUrlMaxLen));
    f("referer");
    f(cut(e.referer, kRefererMaxLen));
    f("host");
    f(cut(e.host, kHostMaxLen));
    if (e.conversion != nullptr) {
        const Conversion& c = *e.conversion;
        f("action");
        f(c.action);
        f("user");
        f(c.user);
        f("amount");
        f(c.amount);
        f("currency");
        f(c.currency);
        f("order");
        f(c.order);
        f("customer");
        f(c.customer);
    }
}

std::size_t digits(std::size_t v) noexcept {
    std::size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

}  // namespace

std::size_t xadd_size(std::string_view stream, const Event& e) noexcept {
    std::size_t argc = 0, size = 0;
    each_arg(stream, e, [&](std::string_view a) {
        argc++;
        size += 1 + digits(a.size()) + 2 + a.size() + 2;  // $<len>\r\n<a>\r\n
    });
    return size + 1 + digits(argc) + 2;  // *<argc>\r\n
}

std::size_t xadd_encode(std::string_view stream, const Event& e,
                        char* out) noexcept {
    std::size_t argc = 0;
    each_arg(stream, e, [&](std::string_view) { argc++; });
    char num[24];
    char* p = out;
    auto put = [&](std::string_view s) {
        if (s.empty()) return;
        std::memcpy(p, s.data(), s.size());
        p += s.size();
    };
    put("*");
    put(decimal(static_cast<std::int64_t>(argc), num));
    put("\r\n");
    each_arg(stream, e, [&](std::string_view a) {
        put("$");
        put(decimal(static_cast<std::int64_t>(a.size()), num));
        put("\r\n");
        put(a);
        put("\r\n");
    });
    return static_cast<std::size_t>(p - out);
}

}  // namespace referral
