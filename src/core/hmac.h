// HMAC-SHA256 with the key schedule done once. OpenSSL 3's one-shot HMAC()
// fetches the algorithm and derives the pads on every call, which cost more
// than all the rest of a click; here the inner and outer digest states are
// computed when the key is loaded and copied (plain structs) per message.
#pragma once
#include <cstddef>
#include <string_view>

namespace referral {

class HmacSha256 {
public:
    static constexpr std::size_t kDigestLen = 32;

    // Throws std::bad_alloc or std::runtime_error.
    HmacSha256(const unsigned char* key, std::size_t len);
    ~HmacSha256();
    HmacSha256(const HmacSha256&) = delete;
    HmacSha256& operator=(const HmacSha256&) = delete;

    // False only when OpenSSL fails.
    bool mac(std::string_view msg, unsigned char out[kDigestLen]) const noexcept;

private:
    struct State;
    State* state_;
};

}  // namespace referral
