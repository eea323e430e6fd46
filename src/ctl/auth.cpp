// The token of `referralctl serve`: read once, kept as its SHA-256, and
// compared in constant time with what a request presents.
#include "ctl/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cctype>
#include <cstring>

#include "worker/config.h"

namespace referral::ctl {

using namespace referral::worker;

Digest sha256(const std::string& s) {
    Digest d;
    SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
    return d;
}

namespace {

// Both sides are hashed first so the comparison takes the same time
// whatever the lengths; CRYPTO_memcmp does not stop at the first
// difference.
bool same_secret(const std::string& given, const Digest& expected) {
    Digest d = sha256(given);
    return CRYPTO_memcmp(d.data(), expected.data(), d.size()) == 0;
}

bool starts_with_nocase(const std::string& s, const char* prefix) {
    std::size_t n = std::strlen(prefix);
    if (s.size() < n) return false;
    for (std::size_t i = 0; i < n; i++) {
        if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    }
    return true;
}

bool base64_decode(const std::string& in, std::string* out) {
    if (in.empty() || in.size() % 4 != 0 || in.size() > 2048) return false;
    std::string buf(in.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(buf.data()),
                            reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
    if (n < 0) return false;
    std::size_t pad = in[in.size() - 1] == '=' ? (in[in.size() - 2] == '=' ? 2 : 1) : 0;
    buf.resize(static_cast<std::size_t>(n) - pad);
    *out = buf;
    return true;
}

}  // namespace

Auth authorized(const httplib::Request& req, const Digest& token) {
    std::string h = req.get_header_value("Authorization");
    if (h.empty() || h.size() > 2048) return Auth::none;
    std::string given;
    Auth how;
    if (starts_with_nocase(h, "bearer ")) {
        given = h.substr(7);
        how = Auth::bearer;
    } else if (starts_with_nocase(h, "basic ")) {
        std::string pair;
        if (!base64_decode(h.substr(6), &pair)) return Auth::none;
        std::size_t colon = pair.find(':');
        if (colon == std::string::npos) return Auth::none;
        given = pair.substr(colon + 1);
        how = Auth::basic;
    } else {
        return Auth::none;
    }
    while (!given.empty() && given.front() == ' ') given.erase(0, 1);
    while (!given.empty() && given.back() == ' ') given.pop_back();
    return same_secret(given, token) ? how : Auth::none;
}

bool cross_site(const httplib::Request& req) {
    std::string site = req.get_header_value("Sec-Fetch-Site");
    if (!site.empty() && site != "same-origin" && site != "none") return true;
    std::string origin = req.get_header_value("Origin");
    return !origin.empty() && origin != "http://" + req.get_header_value("Host");
}

std::string read_token(const std::string& path) {
    std::string t = read_secret_file("--token-file", path);
    if (t.size() < 16 || t.size() > 512)
        throw ConfigError(path + ": the token must be 16 to 512 characters (e.g. openssl rand -hex 32)");
    for (unsigned char c : t) {
        if (c <= ' ' || c >= 0x7f) throw ConfigError(path + ": the token must be printable ASCII without spaces");
    }
    return t;
}

}  // namespace referral::ctl
