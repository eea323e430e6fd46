// Who may use `referralctl serve`: the holder of the token file's content,
// as `Authorization: Bearer TOKEN` or as the Basic password.
#pragma once
#include <httplib.h>
#include <openssl/sha.h>

#include <array>
#include <string>

namespace referral::ctl {

using Digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;
Digest sha256(const std::string& s);

// The token file's content without a trailing newline: 16 to 512
// printable ASCII characters. Throws worker::ConfigError naming the file.
std::string read_token(const std::string& path);

enum class Auth { none, bearer, basic };
// How the request proved it holds the token (Bearer, or Basic with the
// token as the password and any user name, so a browser can ask for it).
Auth authorized(const httplib::Request& req, const Digest& token);

// A browser sends cached Basic credentials with any request to this
// origin, also one that another site's page makes it send (a form posted
// to /v1/rewards/1/redeem). Such a request names its origin: true when
// Sec-Fetch-Site or Origin says it comes from elsewhere (a program sends
// neither).
bool cross_site(const httplib::Request& req);

}  // namespace referral::ctl
