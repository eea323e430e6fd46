// Identifiers from OpenSSL's CSPRNG: event ids, visitor ids, user codes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace referral {

constexpr std::size_t kIdLen = 32;  // 16 random bytes as lowercase hex

// Writes 32 lowercase hex characters (no terminator). False only when the
// CSPRNG fails, in which case nothing usable was written.
bool random_id(char out[kIdLen]) noexcept;

// An event id: the time in Unix milliseconds as 12 hex digits, then 20
// random hex digits (80 bits). Ids made later sort later, so a database's
// unique index on them grows at its right edge instead of touching a random
// page per event (as UUIDv7 does); 80 random bits keep two events of one
// millisecond apart. False only when the CSPRNG fails.
bool time_ordered_id(std::int64_t unix_ms, char out[kIdLen]) noexcept;

// True for exactly 32 lowercase hex characters.
bool is_id(std::string_view s) noexcept;

// `len` characters of [A-Za-z0-9], uniformly drawn (rejection sampling).
// Throws std::runtime_error when the CSPRNG fails.
std::string random_code(std::size_t len);

void hex_lower(const unsigned char* in, std::size_t n, char* out) noexcept;

}  // namespace referral
