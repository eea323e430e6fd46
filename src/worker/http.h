// One small HTTP client for the delivery loop (libcurl): requests to Stripe
// and to webhook endpoints. One easy handle per client, so connections are
// kept alive between requests; every request has a connect and a total
// timeout; no redirects are followed; only http and https.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace referral::worker {

struct HttpRequest {
    std::string method = "POST";
    std::string url;
    std::vector<std::pair<std::string, std::string>> headers;  // name, value
    std::string body;
};

struct HttpReply {
    long status = 0;            // 0: no answer (error says why)
    std::string error;          // transport error: refused, timeout, connection closed, ...
    std::string body;           // at most kMaxBody bytes
    std::string retry_after;    // Retry-After, as sent
    std::string should_retry;   // Stripe-Should-Retry, as sent
    std::string request_id;     // Request-Id (Stripe's), for logs
};

class HttpClient {
public:
    static constexpr std::size_t kMaxBody = 1 << 20;

    HttpClient();
    ~HttpClient();
    HttpClient(const HttpClient&) = delete;
    HttpClient& operator=(const HttpClient&) = delete;

    HttpReply send(const HttpRequest& req, std::int64_t connect_timeout_ms, std::int64_t timeout_ms);
    // Connections opened so far (a new one after a reply that closed it).
    long connections() const { return connections_; }

private:
    void* curl_;  // CURL*
    long connections_ = 0;
};

}  // namespace referral::worker
