#include "core/conversion.h"

namespace referral {
namespace {

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

bool is_action(std::string_view s) noexcept {
    if (s.empty() || s.size() > kActionMaxLen) return false;
    for (char c : s) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
            return false;
        }
    }
    return true;
}

bool is_token(std::string_view s, std::size_t max) noexcept {
    if (s.empty() || s.size() > max) return false;
    for (unsigned char c : s) {
        if (c <= 0x20 || c >= 0x7f || c == ';' || c == '=') return false;
    }
    return true;
}

bool is_amount(std::string_view s) noexcept {
    if (!s.empty() && s.front() == '-') s.remove_prefix(1);
    if (s.empty() || s.size() > kAmountMaxDigits) return false;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
    }
    return true;
}

bool is_currency(std::string_view s) noexcept {
    if (s.size() != 3) return false;
    for (char c : s) {
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
    }
    return true;
}

bool is_customer(std::string_view s) noexcept {
    if (s.empty() || s.size() > kCustomerMaxLen) return false;
    for (char c : s) {
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
            return false;
        }
    }
    return true;
}

const char* parse_conversion(std::string_view header, Conversion* out) noexcept {
    Conversion c{};
    std::size_t semi = header.find(';');
    c.action = trim(header.substr(0, semi));
    if (!is_action(c.action)) return "invalid action";

    bool seen_user = false, seen_amount = false, seen_currency = false,
         seen_order = false, seen_customer = false;
    while (semi != std::string_view::npos) {
        std::string_view rest = header.substr(semi + 1);
        semi = rest.find(';');
        std::string_view pair = trim(rest.substr(0, semi));
        if (semi != std::string_view::npos) header = rest;
        if (pair.empty()) return "empty parameter";
        std::size_t eq = pair.find('=');
        if (eq == std::string_view::npos) return "parameter without '='";
        std::string_view key = pair.substr(0, eq);
        std::string_view value = pair.substr(eq + 1);
        if (key == "user") {
            if (seen_user) return "duplicate user";
            if (!is_user(value)) return "invalid user";
            c.user = value;
            seen_user = true;
        } else if (key == "amount") {
            if (seen_amount) return "duplicate amount";
            if (!is_amount(value)) return "invalid amount";
            c.amount = value;
            seen_amount = true;
        } else if (key == "currency") {
            if (seen_currency) return "duplicate currency";
            if (!is_currency(value)) return "invalid currency";
            c.currency = value;
            seen_currency = true;
        } else if (key == "order") {
            if (seen_order) return "duplicate order";
            if (!is_order(value)) return "invalid order";
            c.order = value;
            seen_order = true;
        } else if (key == "customer") {
            if (seen_customer) return "duplicate customer";
            if (!is_customer(value)) return "invalid customer";
            c.customer = value;
            seen_customer = true;
        } else {
            return "unknown parameter";
        }
    }
    if (!seen_user) return "missing user";
    *out = c;
    return nullptr;
}

}  // namespace referral
