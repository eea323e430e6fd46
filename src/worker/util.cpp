#include "worker/util.h"

#include <sys/time.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/decimal.h"

namespace referral::worker {

std::int64_t now_ms() noexcept {
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    return static_cast<std::int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

namespace {

// Howard Hinnant's civil_from_days: no locale, no tz database, no locks.
void civil_from_days(std::int64_t z, int* y, unsigned* m, unsigned* d) noexcept {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t yy = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = static_cast<int>(yy + (*m <= 2));
}

}  // namespace

std::string format_db_time(std::int64_t unix_ms) {
    if (unix_ms < 0) unix_ms = 0;
    std::int64_t secs = unix_ms / 1000;
    int ms = static_cast<int>(unix_ms % 1000);
    std::int64_t days = secs / 86400;
    int rem = static_cast<int>(secs % 86400);
    int y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    char buf[40];
    if (y > 9999) {  // past any event time (kMaxTs), e.g. a hold added to one
        int n = std::snprintf(buf, sizeof(buf), "%04d-%02u-%02u %02d:%02d:%02d.%03d000", y, mo, d,
                              rem / 3600, rem / 60 % 60, rem % 60, ms);
        return std::string(buf, static_cast<std::size_t>(n));
    }
    // Every event's time goes through here: not snprintf. Each field is
    // written to end where it ends in the template, whose zeros pad it.
    std::memcpy(buf, "0000-00-00 00:00:00.000000", 26);
    decimal_before(static_cast<std::uint64_t>(y), buf + 4);
    decimal_before(mo, buf + 7);
    decimal_before(d, buf + 10);
    decimal_before(static_cast<std::uint64_t>(rem / 3600), buf + 13);
    decimal_before(static_cast<std::uint64_t>(rem / 60 % 60), buf + 16);
    decimal_before(static_cast<std::uint64_t>(rem % 60), buf + 19);
    decimal_before(static_cast<std::uint64_t>(ms), buf + 23);
    return std::string(buf, 26);
}

bool parse_int64(std::string_view s, std::int64_t* out) noexcept {
    std::size_t i = 0;
    bool neg = false;
    if (!s.empty() && s[0] == '-') {
        neg = true;
        i = 1;
    }
    std::size_t digits = s.size() - i;
    if (digits == 0 || digits > 18) return false;
    std::int64_t v = 0;
    for (; i < s.size(); i++) {
        char c = s[i];
        if (c < '0' || c > '9') return false;
        v = v * 10 + (c - '0');
    }
    *out = neg ? -v : v;
    return true;
}

std::string clean_text(std::string_view in, std::size_t max) {
    if (in.size() > max) in = in.substr(0, max);
    bool plain = true;
    for (unsigned char c : in) {
        if (c < 0x20 || c >= 0x7f) {
            plain = false;
            break;
        }
    }
    if (plain) return std::string(in);
    std::string out;
    out.reserve(in.size());
    std::size_t i = 0;
    while (i < in.size()) {
        unsigned char c = static_cast<unsigned char>(in[i]);
        if (c < 0x80) {
            out.push_back((c < 0x20 && c != '\t') || c == 0x7f ? '?' : static_cast<char>(c));
            i++;
            continue;
        }
        std::size_t len = 0;
        std::uint32_t cp = 0;
        if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        }
        bool ok = len != 0 && i + len <= in.size();
        for (std::size_t k = 1; ok && k < len; k++) {
            unsigned char cc = static_cast<unsigned char>(in[i + k]);
            if ((cc & 0xc0) != 0x80) ok = false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (ok) {
            // No overlong forms, surrogates or code points past U+10FFFF.
            static const std::uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
            if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) ok = false;
        }
        if (ok) {
            out.append(in.data() + i, len);
            i += len;
        } else {
            out.push_back('?');
            i++;
        }
    }
    return out;
}

namespace {
LogLevel g_level = LogLevel::info;
const char* g_name = "referral-worker";
}

void set_log_level(LogLevel level) noexcept { g_level = level; }
void set_log_name(const char* program) noexcept { g_name = program; }

void log(LogLevel level, const char* fmt, ...) {
    if (level < g_level) return;
    static const char* names[] = {"debug", "info", "warn", "error"};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[32];
    std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    std::fprintf(stderr, "%s.%03dZ %s [%s] %s\n", when, static_cast<int>(tv.tv_usec / 1000), g_name,
                 names[static_cast<int>(level)], msg);
}

}  // namespace referral::worker
