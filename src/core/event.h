// Events in Redis, schema version 1 (SPEC "Events in Redis").
//
// The module encodes an event once, as the complete RESP command
//   XADD <stream> * v 1 id <id> type <type> ts <ts> code <code> ...
// and keeps those bytes until Redis acknowledges them: the same bytes go to
// hiredis (redisAsyncFormattedCommand) and, when Redis is away, to the spool.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/conversion.h"
#include "core/decimal.h"

namespace referral {

constexpr std::size_t kUaMaxLen = 512;
constexpr std::size_t kUrlMaxLen = 2048;
constexpr std::size_t kRefererMaxLen = 2048;
constexpr std::size_t kHostMaxLen = 1024;
constexpr std::size_t kIpMaxLen = 64;

struct Event {
    std::string_view id;       // 32 lowercase hex
    std::string_view type;     // "click" or "conversion"
    std::int64_t ts_ms = 0;
    std::string_view code;     // may be empty
    std::string_view visitor;  // may be empty
    std::int64_t first_ts_ms = 0;  // 0 means "no attribution": sent empty
    std::string_view ip;
    std::string_view ua;       // cut to kUaMaxLen
    std::string_view url;      // cut to kUrlMaxLen
    std::string_view referer;  // cut to kRefererMaxLen
    std::string_view host;     // cut to kHostMaxLen
    const Conversion* conversion = nullptr;  // conversions only
};

// The command for one event. Its constant arguments (XADD, the field
// names) are framed at compile time; the values are gathered once (the
// numbers written out once), so the size and the bytes come from the same
// list. It points into `stream`, the Event and itself: keep them alive and
// in place until encode() has run.
class Xadd {
public:
    Xadd(std::string_view stream, const Event& e) noexcept;
    Xadd(const Xadd&) = delete;
    Xadd& operator=(const Xadd&) = delete;

    // Exact size of the encoded command, so the caller can allocate once.
    std::size_t size() const noexcept { return size_; }

    // Writes the command into `out` (which holds at least size() bytes) and
    // returns the number of bytes written.
    std::size_t encode(char* out) const noexcept;

private:
    // Bytes copied as they are (`framed`), or a value framed as a bulk
    // string. No default initialisers: the array is filled, not cleared.
    struct Piece {
        const char* data;
        std::size_t size;
        bool framed;
    };
    static constexpr std::size_t kMaxPieces = 48;
    Piece pieces_[kMaxPieces];
    std::size_t count_ = 0;
    std::size_t size_ = 0;
    char ts_[kMaxSignedDecimalLen];
    char first_ts_[kMaxSignedDecimalLen];
};

}  // namespace referral
