// Small helpers shared by referral-worker and referralctl: time, numbers,
// text sanitising and logging to stderr.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "core/conversion.h"

namespace referral::worker {

// Milliseconds since the Unix epoch (wall clock).
std::int64_t now_ms() noexcept;

// "YYYY-MM-DD HH:MM:SS.ffffff", UTC: how both databases store timestamps
// (the text form Django, Rails and SQLAlchemy write into SQLite).
std::string format_db_time(std::int64_t unix_ms);

// Strict decimal integer: optional '-', 1 to 18 digits, nothing else.
bool parse_int64(std::string_view s, std::int64_t* out) noexcept;

// Copies `in` cut to `max` bytes, with invalid UTF-8, NUL and other control
// characters (but tab) replaced by '?', so any database accepts the text.
std::string clean_text(std::string_view in, std::size_t max);

// The conversion header's rules (user ids, orders, customers, actions)
// are src/core/conversion.h's: referral::is_token, is_action, ...

enum class LogLevel { debug, info, warn, error };
void set_log_level(LogLevel level) noexcept;
// The program named in every line (default "referral-worker").
void set_log_name(const char* program) noexcept;
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace referral::worker
