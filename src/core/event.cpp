#include "core/event.h"

#include <cstring>

#include "core/decimal.h"

namespace referral {
namespace {

std::string_view cut(std::string_view s, std::size_t max) noexcept {
    return s.size() > max ? s.substr(0, max) : s;
}

// `buf` holds at least 21 bytes.
std::string_view decimal(std::int64_t v, char* buf) noexcept {
    const bool neg = v < 0;
    const std::uint64_t u = neg ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
    char* end = buf + 21;
    char* p = decimal_before(u, end);
    if (neg) *--p = '-';
    return std::string_view(p, static_cast<std::size_t>(end - p));
}

}  // namespace

Xadd::Xadd(std::string_view stream, const Event& e) noexcept {
    auto f = [this](std::string_view a) { args_[argc_++] = a; };
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
    f(decimal(e.ts_ms, ts_));
    f("code");
    f(e.code);
    f("visitor");
    f(e.visitor);
    f("first_ts");
    f(e.first_ts_ms > 0 ? decimal(e.first_ts_ms, first_ts_) : std::string_view());
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
    size_ = 1 + decimal_len(argc_) + 2;  // *<argc>\r\n
    for (std::size_t i = 0; i < argc_; i++) {
        size_ += 1 + decimal_len(args_[i].size()) + 2 + args_[i].size() + 2;  // $<len>\r\n<a>\r\n
    }
}

std::size_t Xadd::encode(char* out) const noexcept {
    char* p = out;
    auto number = [&](char prefix, std::size_t n) {
        *p++ = prefix;
        p += write_decimal(n, p);
        *p++ = '\r';
        *p++ = '\n';
    };
    number('*', argc_);
    for (std::size_t i = 0; i < argc_; i++) {
        const std::string_view a = args_[i];
        number('$', a.size());
        if (!a.empty()) std::memcpy(p, a.data(), a.size());
        p += a.size();
        *p++ = '\r';
        *p++ = '\n';
    }
    return static_cast<std::size_t>(p - out);
}

}  // namespace referral
