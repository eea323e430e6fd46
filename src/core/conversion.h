// The conversion header a backend sends:
//   X-Referral-Conversion: subscribe; user=42; amount=999; currency=usd; order=in_1
// action   [a-z0-9_]{1,32}
// user     required, 1..128 printable ASCII without space, ';' or '='
// amount   optional integer in minor units (optional '-', at most 18 digits)
// currency optional, 3 ASCII letters
// order    optional, 1..128 printable ASCII without space, ';' or '='
// customer optional, the user's id at the payment provider (a Stripe
//          customer "cus_..."): 1..64 of [A-Za-z0-9_]
// Keys are lowercase, each at most once; anything else makes the header
// malformed. Spaces and tabs around ';' and the action are ignored.
//
// The rule for each field is defined here once, for the module (parsing
// the header), the worker (checking the event it reads from Redis) and
// referralctl: the is_* functions below.
#pragma once
#include <cstddef>
#include <string_view>

namespace referral {

constexpr std::size_t kActionMaxLen = 32;
constexpr std::size_t kUserMaxLen = 128;
constexpr std::size_t kOrderMaxLen = 128;
constexpr std::size_t kAmountMaxDigits = 18;
constexpr std::size_t kCustomerMaxLen = 64;

struct Conversion {
    std::string_view action;
    std::string_view user;
    std::string_view amount;    // empty when absent
    std::string_view currency;  // empty when absent
    std::string_view order;     // empty when absent
    std::string_view customer;  // empty when absent
};

// [a-z0-9_]{1,32}
bool is_action(std::string_view s) noexcept;
// 1..max printable ASCII without space, ';' or '=' (so a value can never
// smuggle a second pair, a header break or a log escape).
bool is_token(std::string_view s, std::size_t max) noexcept;
inline bool is_user(std::string_view s) noexcept { return is_token(s, kUserMaxLen); }
inline bool is_order(std::string_view s) noexcept { return is_token(s, kOrderMaxLen); }
// An optional '-', then 1..18 digits: minor units, fits an int64.
bool is_amount(std::string_view s) noexcept;
// Three ASCII letters, either case (ISO 4217, as Stripe writes it: "usd").
bool is_currency(std::string_view s) noexcept;
// [A-Za-z0-9_]{1,64}
bool is_customer(std::string_view s) noexcept;

// On success fills `out` with views into `header` and returns nullptr; on
// failure returns a short static reason ("missing user", ...).
const char* parse_conversion(std::string_view header, Conversion* out) noexcept;

}  // namespace referral
