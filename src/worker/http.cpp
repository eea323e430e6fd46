#include "worker/http.h"

#include <curl/curl.h>

#include <cctype>
#include <mutex>
#include <stdexcept>

namespace referral::worker {
namespace {

void global_init_once() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
    auto* reply = static_cast<HttpReply*>(user);
    size_t len = size * n;
    if (reply->body.size() + len > HttpClient::kMaxBody) return 0;  // aborts: a reply that large is wrong
    reply->body.append(data, len);
    return len;
}

// "Name: value\r\n" -> the value when the name matches (case-insensitive).
bool header_value(const char* line, size_t len, const char* name, std::string* out) {
    size_t n = std::char_traits<char>::length(name);
    if (len < n + 1 || line[n] != ':') return false;
    for (size_t i = 0; i < n; i++) {
        if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
    }
    size_t b = n + 1, e = len;
    while (b < e && (line[b] == ' ' || line[b] == '\t')) b++;
    while (e > b && (line[e - 1] == '\r' || line[e - 1] == '\n' || line[e - 1] == ' ')) e--;
    out->assign(line + b, e - b > 256 ? 256 : e - b);
    return true;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* reply = static_cast<HttpReply*>(user);
    size_t len = size * n;
    header_value(data, len, "retry-after", &reply->retry_after) ||
        header_value(data, len, "stripe-should-retry", &reply->should_retry) ||
        header_value(data, len, "request-id", &reply->request_id);
    return len;
}

}  // namespace

HttpClient::HttpClient() {
    global_init_once();
    curl_ = curl_easy_init();
    if (!curl_) throw std::runtime_error("curl_easy_init failed");
}

HttpClient::~HttpClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

HttpReply HttpClient::send(const HttpRequest& req, std::int64_t connect_timeout_ms, std::int64_t timeout_ms) {
    CURL* c = static_cast<CURL*>(curl_);
    HttpReply reply;
    curl_easy_reset(c);  // keeps the connection cache: the next request reuses it
    curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_timeout_ms));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "referral-worker/1");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    if (req.method == "POST") {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    }
    struct curl_slist* headers = nullptr;
    for (const auto& h : req.headers) headers = curl_slist_append(headers, (h.first + ": " + h.second).c_str());
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(headers);
    long opened = 0;
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &opened);
    connections_ += opened;
    if (rc != CURLE_OK) {
        reply.status = 0;
        reply.error = curl_easy_strerror(rc);
        reply.body.clear();
        return reply;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    return reply;
}

}  // namespace referral::worker
