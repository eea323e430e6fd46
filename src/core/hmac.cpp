// The SHA256_* functions are deprecated in OpenSSL 3 in favour of EVP, but
// they are the only interface whose state is a plain struct: copying it is
// free, while EVP_MD_CTX_copy_ex() allocates on every call in OpenSSL 3.0.
// HMAC itself is RFC 2104, checked against OpenSSL's HMAC() in the tests.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "core/hmac.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <stdexcept>

namespace referral {

struct HmacSha256::State {
    SHA256_CTX inner;  // after hashing key ^ ipad
    SHA256_CTX outer;  // after hashing key ^ opad
};

namespace {
constexpr std::size_t kBlock = SHA256_CBLOCK;  // 64
}

HmacSha256::HmacSha256(const unsigned char* key, std::size_t len) : state_(new State) {
    unsigned char k[kBlock] = {};
    if (len > kBlock) {
        SHA256(key, len, k);
    } else {
        for (std::size_t i = 0; i < len; i++) k[i] = key[i];
    }
    unsigned char ipad[kBlock], opad[kBlock];
    for (std::size_t i = 0; i < kBlock; i++) {
        ipad[i] = k[i] ^ 0x36;
        opad[i] = k[i] ^ 0x5c;
    }
    bool ok = SHA256_Init(&state_->inner) == 1 && SHA256_Update(&state_->inner, ipad, kBlock) == 1 &&
              SHA256_Init(&state_->outer) == 1 && SHA256_Update(&state_->outer, opad, kBlock) == 1;
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));
    if (!ok) {
        OPENSSL_cleanse(state_, sizeof(State));
        delete state_;
        throw std::runtime_error("cannot set up HMAC-SHA256");
    }
}

HmacSha256::~HmacSha256() {
    OPENSSL_cleanse(state_, sizeof(State));
    delete state_;
}

bool HmacSha256::mac(std::string_view msg, unsigned char out[kDigestLen]) const noexcept {
    SHA256_CTX c = state_->inner;
    unsigned char inner[kDigestLen];
    bool ok = SHA256_Update(&c, msg.data(), msg.size()) == 1 && SHA256_Final(inner, &c) == 1;
    c = state_->outer;
    ok = ok && SHA256_Update(&c, inner, sizeof(inner)) == 1 && SHA256_Final(out, &c) == 1;
    OPENSSL_cleanse(&c, sizeof(c));
    OPENSSL_cleanse(inner, sizeof(inner));
    return ok;
}

}  // namespace referral
