// `referralctl serve`: cpp-httplib's server (threads from its pool, one
// request at a time per connection) in front of the same Store code the
// command line uses. Every request is authenticated before its body is
// read; paths are split and percent-decoded here, not by regexes.
#include "ctl/serve.h"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "ctl/auth.h"
#include "ctl/dashboard_assets.h"
#include "ctl/http.h"
#include "worker/util.h"

namespace referral::ctl {

using json = nlohmann::json;
using namespace referral::worker;

// ------------------------------------------------------------ the pool

StorePool::Lease::~Lease() {
    if (!store_ || broken_) return;
    std::lock_guard<std::mutex> lock(pool_->m_);
    if (pool_->idle_.size() < 16) pool_->idle_.push_back(std::move(store_));
}

StorePool::Lease StorePool::take() {
    {
        std::lock_guard<std::mutex> lock(m_);
        if (!idle_.empty()) {
            auto s = std::move(idle_.back());
            idle_.pop_back();
            return Lease(this, std::move(s));
        }
    }
    auto store = open_store(url_, false);
    store->require_current_schema();
    return Lease(this, std::move(store));
}

void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    // Invalid UTF-8 from the database is replaced, never a thrown dump().
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", "application/json");
}

namespace {

bool parse_listen(const std::string& s, std::string* host, int* port) {
    std::size_t colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    std::string h = s.substr(0, colon);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    std::int64_t p;
    if (h.empty() || !parse_int64(s.substr(colon + 1), &p) || p < 0 || p > 65535) return false;
    *host = h;
    *port = static_cast<int>(p);
    return true;
}

// ---------------------------------------------------------------- paths

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// The raw target's path split at '/', each segment percent-decoded (so a
// user id may hold an encoded '/'). Throws 400 on a bad escape.
std::vector<std::string> segments(const std::string& target) {
    std::string path = target.substr(0, target.find('?'));
    std::vector<std::string> out;
    std::size_t i = 1;
    while (i <= path.size()) {
        std::size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        std::string seg;
        for (std::size_t k = i; k < j; k++) {
            if (path[k] != '%') {
                seg += path[k];
                continue;
            }
            int a = k + 2 < j ? hex(path[k + 1]) : -1, b = k + 2 < j ? hex(path[k + 2]) : -1;
            if (a < 0 || b < 0) throw HttpError{400, "bad percent-encoding in the path"};
            seg += static_cast<char>(a * 16 + b);
            k += 2;
        }
        out.push_back(seg);
        i = j + 1;
    }
    while (!out.empty() && out.back().empty()) out.pop_back();  // "/v1/stats/" is "/v1/stats"
    return out;
}

// ------------------------------------------------------------ dashboard

const char* mime(const std::string& name) {
    auto ends = [&](const char* e) {
        std::size_t n = std::strlen(e);
        return name.size() >= n && name.compare(name.size() - n, n, e) == 0;
    };
    if (ends(".html")) return "text/html; charset=utf-8";
    if (ends(".js")) return "text/javascript; charset=utf-8";
    if (ends(".css")) return "text/css; charset=utf-8";
    return "application/octet-stream";
}

// The page and its files: the copy built into the program, or (for whoever
// edits the page) the files of --dashboard-dir, read on every request.
bool send_asset(const std::string& dir, const std::string& name, httplib::Response& res) {
    for (std::size_t i = 0; i < kDashboardAssetCount; i++) {
        const DashboardAsset& a = kDashboardAssets[i];
        if (name != a.name) continue;
        std::string body;
        if (!dir.empty()) {
            std::ifstream in(dir + "/" + a.source, std::ios::binary);
            if (!in) throw HttpError{404, "cannot read " + dir + "/" + a.source};
            std::ostringstream buf;
            buf << in.rdbuf();
            body = buf.str();
        } else {
            body.assign(reinterpret_cast<const char*>(a.data), a.size);
        }
        res.status = 200;
        res.set_content(body, mime(name));
        res.set_header("Cache-Control", "no-cache");
        return true;
    }
    return false;
}

bool is_dashboard(const std::vector<std::string>& seg) {
    return seg.empty() || seg[0] == "assets" || seg[0] == "index.html" || seg[0] == "favicon.ico";
}

}  // namespace

int serve(const ServeOptions& opt, const Config& config, const DatabaseUrl& database) {
    set_log_name("referralctl-serve");
    std::string host;
    int port;
    if (!parse_listen(opt.listen, &host, &port)) {
        std::fprintf(stderr, "referralctl: --listen %s: expected HOST:PORT such as 127.0.0.1:8082\n",
                     opt.listen.c_str());
        return 2;
    }
    Digest token;
    try {
        token = sha256(read_token(opt.token_file));
    } catch (const ConfigError& e) {
        std::fprintf(stderr, "referralctl: %s\n", e.what());
        return 1;
    }
    Context ctx(config, database);
    try {
        auto probe = ctx.pool.take();  // fails now, not at the first request
    } catch (const DbError& e) {
        std::fprintf(stderr, "referralctl: %s\n", e.what());
        return 1;
    }

    // Signals go to one thread that stops the server; the others never see
    // them (blocked before any thread starts).
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    signal(SIGPIPE, SIG_IGN);

    httplib::Server svr;
    svr.new_task_queue = [] { return new httplib::ThreadPool(16); };
    svr.set_payload_max_length(kMaxBody);
    svr.set_read_timeout(10);
    svr.set_write_timeout(10);
    svr.set_keep_alive_timeout(2);
    svr.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                             {"Content-Security-Policy",
                              "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"},
                             {"Referrer-Policy", "no-referrer"}});

    auto dispatch = [&](const httplib::Request& req, httplib::Response& res) {
        try {
            std::vector<std::string> seg = segments(req.target);
            if (!seg.empty() && seg[0] == "v1") {
                handle_api(ctx, req, res, std::vector<std::string>(seg.begin() + 1, seg.end()));
                return;
            }
            bool get = req.method == "GET" || req.method == "HEAD";
            if (seg.size() == 1 && seg[0] == "metrics" && get) {
                handle_metrics(ctx, res);
                return;
            }
            if (get && seg.empty() && send_asset(opt.dashboard_dir, "index.html", res)) return;
            if (get && seg.size() == 2 && seg[0] == "assets" && send_asset(opt.dashboard_dir, seg[1], res)) return;
            throw HttpError{404, "no such endpoint: " + req.method + " " + clean_text(req.path, 200)};
        } catch (const HttpError& e) {
            if (e.status >= 500) log(LogLevel::error, "%s %s: %s", req.method.c_str(), clean_text(req.path, 200).c_str(),
                                     e.message.c_str());
            json body = e.extra;
            body["error"] = e.message;
            send_json(res, e.status, body);
        }
    };
    // Before routing and before the body is read: bounded target, then the
    // credentials.
    svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
        if (req.target.size() > 1024) {
            send_json(res, 400, {{"error", "request target too long (at most 1024 bytes)"}});
            return httplib::Server::HandlerResponse::Handled;
        }
        Auth auth = authorized(req, token);
        bool change = req.method != "GET" && req.method != "HEAD";
        if (auth == Auth::basic && change && cross_site(req)) {
            send_json(res, 403, {{"error", "cross-site request refused: send the token as a Bearer token"}});
            return httplib::Server::HandlerResponse::Handled;
        }
        if (auth != Auth::none) {
            // RFC 9112: a request without Content-Length or
            // Transfer-Encoding has no body; httplib would wait for the
            // connection to close. Answer it here, body empty.
            if (change && !req.has_header("Content-Length") &&
                !req.has_header("Transfer-Encoding")) {
                dispatch(req, res);
                return httplib::Server::HandlerResponse::Handled;
            }
            return httplib::Server::HandlerResponse::Unhandled;
        }
        std::vector<std::string> seg;
        try {
            seg = segments(req.target);
        } catch (const HttpError&) {
        }
        if (is_dashboard(seg)) {
            res.set_header("WWW-Authenticate", "Basic realm=\"referral dashboard\", charset=\"UTF-8\"");
        } else {
            res.set_header("WWW-Authenticate", "Bearer realm=\"referral\"");
        }
        send_json(res, 401,
                  {{"error", "authentication required: Authorization: Bearer <token> (or the token as the Basic "
                             "password)"}});
        return httplib::Server::HandlerResponse::Handled;
    });

    svr.Get(".*", dispatch);
    svr.Post(".*", dispatch);
    svr.Put(".*", dispatch);
    svr.Patch(".*", dispatch);
    svr.Delete(".*", dispatch);

    // Answers httplib makes itself (no route for PUT, a body too large, a
    // malformed request) get the same JSON shape; too large is a 400.
    svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty()) return;
        std::string msg = res.status == 400 ? "malformed request" : "HTTP status " + std::to_string(res.status);
        if (res.status == 413) {
            res.status = 400;
            msg = "request body too large (at most " + std::to_string(kMaxBody) + " bytes)";
        } else if (res.status == 404) {
            msg = "no such endpoint";
        }
        send_json(res, res.status, {{"error", msg}});
    });
    svr.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        log(LogLevel::error, "%s %s: %s", req.method.c_str(), clean_text(req.path, 200).c_str(), what.c_str());
        send_json(res, 500, {{"error", "internal error"}});
    });
    svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        log(LogLevel::info, "%s %s %d", req.method.c_str(), clean_text(req.path, 200).c_str(), res.status);
    });

    if (port == 0) {
        port = svr.bind_to_any_port(host);
        if (port < 0) port = 0;
    } else if (!svr.bind_to_port(host, port)) {
        port = 0;
    }
    if (port == 0) {
        std::fprintf(stderr, "referralctl: cannot listen on %s\n", opt.listen.c_str());
        return 1;
    }
    std::atomic<bool> signalled{false};
    std::thread stopper([&] {
        int sig = 0;
        sigwait(&sigs, &sig);
        signalled = true;
        svr.stop();
    });
    std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    std::fprintf(stderr, "referralctl: serving the API and the dashboard on http://%s:%d/ (%s)\n", shown.c_str(),
                 port, describe(database).c_str());
    std::fflush(stderr);
    svr.listen_after_bind();
    // Stopped by a signal, or failed: then the stopper still waits for one.
    bool clean = signalled;
    if (!clean) {
        std::fprintf(stderr, "referralctl: the server stopped with an error\n");
        pthread_kill(stopper.native_handle(), SIGTERM);
    }
    stopper.join();
    return clean ? 0 : 1;
}

}  // namespace referral::ctl
