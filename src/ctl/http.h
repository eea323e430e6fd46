// What the parts of `referralctl serve` share: the configuration, a pool of
// database connections (one per request in flight; a connection is never
// shared between threads) and JSON answers.
#pragma once
#include <httplib.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/config.h"
#include "worker/store.h"

namespace referral::ctl {

// Answered as {"error": message} with `status`.
struct HttpError {
    int status;
    std::string message;
    nlohmann::json extra = nlohmann::json::object();  // more keys of the answer
};

class StorePool {
public:
    explicit StorePool(worker::DatabaseUrl url) : url_(std::move(url)) {}

    // A connection for one request, given back when the lease ends unless
    // a database error marked it broken (it is closed then).
    class Lease {
    public:
        Lease(StorePool* pool, std::unique_ptr<worker::Store> store) : pool_(pool), store_(std::move(store)) {}
        Lease(Lease&&) = default;
        ~Lease();
        worker::Store& operator*() { return *store_; }
        worker::Store* operator->() { return store_.get(); }
        void broken() { broken_ = true; }

    private:
        StorePool* pool_;
        std::unique_ptr<worker::Store> store_;
        bool broken_ = false;
    };

    Lease take();  // throws worker::DbError

private:
    friend class Lease;
    worker::DatabaseUrl url_;
    std::mutex m_;
    std::vector<std::unique_ptr<worker::Store>> idle_;
};

struct Context {
    worker::Config config;
    StorePool pool;
    Context(worker::Config c, worker::DatabaseUrl url) : config(std::move(c)), pool(std::move(url)) {}
};

void send_json(httplib::Response& res, int status, const nlohmann::json& body);

// The /v1 API. `segments`: the path's segments after "v1", percent-decoded.
void handle_api(Context& ctx, const httplib::Request& req, httplib::Response& res,
                const std::vector<std::string>& segments);
// GET /metrics.
void handle_metrics(Context& ctx, httplib::Response& res);

constexpr std::size_t kMaxBody = 4096;  // bytes of a request body

}  // namespace referral::ctl
