// libFuzzer target: parse_conversion never reads out of bounds, and when it
// accepts a header every field is within its bounds, obeys its character
// rule and is a view into the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>

#include "core/conversion.h"

namespace {

[[noreturn]] void die() { std::abort(); }

void inside(std::string_view f, const char* base, std::size_t size) {
    if (f.empty()) return;
    if (f.data() < base || f.data() + f.size() > base + size) die();
    // A substring of the input, byte for byte (not a copy that happens to
    // sit in the same buffer).
    if (std::string_view(base, size).find(f) == std::string_view::npos) die();
}

bool token(std::string_view s) {
    for (unsigned char c : s) {
        if (c <= 0x20 || c >= 0x7f || c == ';' || c == '=') return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // An exact-size heap copy so ASan sees any read past the end.
    std::unique_ptr<char[]> buf(new char[size ? size : 1]);
    if (size) std::memcpy(buf.get(), data, size);
    const char* base = buf.get();
    std::string_view h(base, size);

    referral::Conversion c{};
    const char* err = referral::parse_conversion(h, &c);
    if (err != nullptr) {
        if (err[0] == '\0') die();
        return 0;
    }
    // action [a-z0-9_]{1,32}
    if (c.action.empty() || c.action.size() > referral::kActionMaxLen) die();
    for (char ch : c.action) {
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) die();
    }
    // user required, 1..128 token
    if (c.user.empty() || c.user.size() > referral::kUserMaxLen || !token(c.user)) die();
    // amount: optional '-', 1..18 digits
    if (!c.amount.empty()) {
        std::string_view d = c.amount;
        if (d.front() == '-') d.remove_prefix(1);
        if (d.empty() || d.size() > referral::kAmountMaxDigits) die();
        for (char ch : d) {
            if (ch < '0' || ch > '9') die();
        }
    }
    // currency: 3 letters
    if (!c.currency.empty()) {
        if (c.currency.size() != 3) die();
        for (char ch : c.currency) {
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))) die();
        }
    }
    // order: 0 (absent) or 1..128 token
    if (c.order.size() > referral::kOrderMaxLen || !token(c.order)) die();
    // customer: 0 (absent) or 1..64 of [A-Za-z0-9_]
    if (c.customer.size() > referral::kCustomerMaxLen) die();
    for (char ch : c.customer) {
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_')) die();
    }
    for (std::string_view f : {c.action, c.user, c.amount, c.currency, c.order, c.customer}) {
        inside(f, base, size);
    }
    // The accepted header cannot carry a line break or NUL anywhere.
    for (char ch : h) {
        if (ch == '\r' || ch == '\n' || ch == '\0') die();
    }
    // Parsing is deterministic.
    referral::Conversion again{};
    if (referral::parse_conversion(h, &again) != nullptr) die();
    if (again.action != c.action || again.user != c.user || again.amount != c.amount ||
        again.currency != c.currency || again.order != c.order || again.customer != c.customer) {
        die();
    }
    return 0;
}
