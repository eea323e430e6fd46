#include "core/hmac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <stdexcept>

namespace referral {
namespace {

constexpr std::size_t kBlock = 64;  // SHA-256 block size

const EVP_MD* sha256() {
    // Fetched once: EVP_sha256() would be fetched again on every init.
    static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return md;
}

}  // namespace

HmacSha256::HmacSha256(const unsigned char* key, std::size_t len) {
    const EVP_MD* md = sha256();
    if (md == nullptr) throw std::runtime_error("SHA256 is not available");
    unsigned char k[kBlock] = {};
    if (len > kBlock) {
        unsigned int n = 0;
        if (EVP_Digest(key, len, k, &n, md, nullptr) != 1) {
            throw std::runtime_error("cannot hash the HMAC key");
        }
    } else {
        for (std::size_t i = 0; i < len; i++) k[i] = key[i];
    }
    unsigned char ipad[kBlock], opad[kBlock];
    for (std::size_t i = 0; i < kBlock; i++) {
        ipad[i] = k[i] ^ 0x36;
        opad[i] = k[i] ^ 0x5c;
    }
    inner_ = EVP_MD_CTX_new();
    outer_ = EVP_MD_CTX_new();
    bool ok = inner_ != nullptr && outer_ != nullptr &&
              EVP_DigestInit_ex(inner_, md, nullptr) == 1 &&
              EVP_DigestUpdate(inner_, ipad, kBlock) == 1 &&
              EVP_DigestInit_ex(outer_, md, nullptr) == 1 &&
              EVP_DigestUpdate(outer_, opad, kBlock) == 1;
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));
    if (!ok) {
        EVP_MD_CTX_free(inner_);
        EVP_MD_CTX_free(outer_);
        throw std::runtime_error("cannot set up HMAC-SHA256");
    }
}

HmacSha256::~HmacSha256() {
    EVP_MD_CTX_free(inner_);
    EVP_MD_CTX_free(outer_);
}

bool HmacSha256::mac(std::string_view msg, unsigned char out[kDigestLen]) const noexcept {
    EVP_MD_CTX* c = EVP_MD_CTX_new();
    if (c == nullptr) return false;
    unsigned char inner[kDigestLen];
    unsigned int n = 0;
    bool ok = EVP_MD_CTX_copy_ex(c, inner_) == 1 &&
              EVP_DigestUpdate(c, msg.data(), msg.size()) == 1 &&
              EVP_DigestFinal_ex(c, inner, &n) == 1 &&
              EVP_MD_CTX_copy_ex(c, outer_) == 1 &&
              EVP_DigestUpdate(c, inner, sizeof(inner)) == 1 &&
              EVP_DigestFinal_ex(c, out, &n) == 1;
    EVP_MD_CTX_free(c);
    OPENSSL_cleanse(inner, sizeof(inner));
    return ok;
}

}  // namespace referral
