#include "core/event.h"

#include <cstring>

#include "core/decimal.h"

namespace referral {
namespace {

std::string_view cut(std::string_view s, std::size_t max) noexcept {
    return s.size() > max ? s.substr(0, max) : s;
}

// Signed: `buf` holds kMaxSignedDecimalLen bytes.
std::string_view decimal(std::int64_t v, char* buf) noexcept {
    const bool neg = v < 0;
    const std::uint64_t u = neg ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
    char* end = buf + kMaxSignedDecimalLen;
    char* p = decimal_before(u, end);
    if (neg) *--p = '-';
    return std::string_view(p, static_cast<std::size_t>(end - p));
}

// "$<len>\r\n<name>\r\n", a name of fewer than 10 bytes as a RESP bulk
// string, built by the compiler.
template <std::size_t N>
struct Framed {
    static_assert(N >= 2 && N - 1 < 10, "names of 1 to 9 bytes");
    char bytes[N - 1 + 6] = {};
    constexpr Framed(const char (&name)[N]) {
        bytes[0] = '$';
        bytes[1] = static_cast<char>('0' + (N - 1));
        bytes[2] = '\r';
        bytes[3] = '\n';
        for (std::size_t i = 0; i + 1 < N; i++) bytes[4 + i] = name[i];
        bytes[N + 3] = '\r';
        bytes[N + 4] = '\n';
    }
};

// The arrays' own headers, and every constant argument, in order.
constexpr char kClickHead[] = "*27\r\n";        // XADD, stream, *, 12 pairs
constexpr char kConversionHead[] = "*39\r\n";   // and 6 pairs more
constexpr Framed kXadd("XADD");
constexpr Framed kAuto("*");
constexpr Framed kV("v");
constexpr Framed kOne("1");
constexpr Framed kId("id");
constexpr Framed kType("type");
constexpr Framed kTs("ts");
constexpr Framed kCode("code");
constexpr Framed kVisitor("visitor");
constexpr Framed kFirstTs("first_ts");
constexpr Framed kIp("ip");
constexpr Framed kUa("ua");
constexpr Framed kUrl("url");
constexpr Framed kReferer("referer");
constexpr Framed kHost("host");
constexpr Framed kAction("action");
constexpr Framed kUser("user");
constexpr Framed kAmount("amount");
constexpr Framed kCurrency("currency");
constexpr Framed kOrder("order");
constexpr Framed kCustomer("customer");

}  // namespace

Xadd::Xadd(std::string_view stream, const Event& e) noexcept {
    auto framed = [this](const char* data, std::size_t n) {
        pieces_[count_++] = Piece{data, n, true};
        size_ += n;
    };
    auto name = [&](const auto& f) { framed(f.bytes, sizeof(f.bytes)); };
    auto value = [this](std::string_view v) {
        pieces_[count_++] = Piece{v.data(), v.size(), false};
        size_ += 1 + decimal_len(v.size()) + 2 + v.size() + 2;  // $<len>\r\n<v>\r\n
    };
    if (e.conversion == nullptr) {
        framed(kClickHead, sizeof(kClickHead) - 1);
    } else {
        framed(kConversionHead, sizeof(kConversionHead) - 1);
    }
    name(kXadd);
    value(stream);
    name(kAuto);
    name(kV);
    name(kOne);
    name(kId);
    value(e.id);
    name(kType);
    value(e.type);
    name(kTs);
    value(decimal(e.ts_ms, ts_));
    name(kCode);
    value(e.code);
    name(kVisitor);
    value(e.visitor);
    name(kFirstTs);
    value(e.first_ts_ms > 0 ? decimal(e.first_ts_ms, first_ts_) : std::string_view());
    name(kIp);
    value(cut(e.ip, kIpMaxLen));
    name(kUa);
    value(cut(e.ua, kUaMaxLen));
    name(kUrl);
    value(cut(e.url, kUrlMaxLen));
    name(kReferer);
    value(cut(e.referer, kRefererMaxLen));
    name(kHost);
    value(cut(e.host, kHostMaxLen));
    if (e.conversion != nullptr) {
        const Conversion& c = *e.conversion;
        name(kAction);
        value(c.action);
        name(kUser);
        value(c.user);
        name(kAmount);
        value(c.amount);
        name(kCurrency);
        value(c.currency);
        name(kOrder);
        value(c.order);
        name(kCustomer);
        value(c.customer);
    }
}

std::size_t Xadd::encode(char* out) const noexcept {
    char* p = out;
    for (std::size_t i = 0; i < count_; i++) {
        const Piece& piece = pieces_[i];
        if (!piece.framed) {
            *p++ = '$';
            p += write_decimal(piece.size, p);
            *p++ = '\r';
            *p++ = '\n';
        }
        if (piece.size > 0) std::memcpy(p, piece.data, piece.size);
        p += piece.size;
        if (!piece.framed) {
            *p++ = '\r';
            *p++ = '\n';
        }
    }
    return static_cast<std::size_t>(p - out);
}

}  // namespace referral
