// The delivery loop: the worker's second path beside the stream consumer
// (and its background upkeep: `retention` in small batches),
// on a thread and a database connection of its own, so that Stripe or a
// webhook endpoint being slow never holds up the stream. Each round:
//   promote  pending rewards whose hold has passed (and queue what that
//            makes necessary, in the same transaction);
//   claim    due outbox rows, leased to this worker for kLeaseMs (on
//            PostgreSQL with FOR UPDATE SKIP LOCKED: several workers never
//            send the same row at once);
//   send     each request, with its idempotency key;
//   record   the outcome (done / retry later / dead) and its effect on the
//            reward, in one transaction, only while the lease is ours.
// A worker killed between send and record leaves the lease to expire (or
// to be released by a restart under the same consumer name); the request
// is then sent again with the same key, so Stripe applies it once.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/config.h"
#include "worker/http.h"
#include "worker/lifecycle.h"
#include "worker/store.h"
#include "worker/stripe.h"

namespace referral::worker {

struct DeliveryTotals {
    std::atomic<std::int64_t> promoted{0}, delivered{0}, retried{0}, dead{0}, requests{0}, retained{0};
};

class DeliveryLoop {
public:
    static constexpr std::int64_t kLeaseMs = 120000;
    static constexpr int kClaim = 50;

    DeliveryLoop(const Config& config, DatabaseUrl database, std::string owner);
    // Until g_stop; never throws (database trouble: backoff and retry).
    void run() noexcept;
    const DeliveryTotals& totals() const { return totals_; }

private:
    struct Outcome {
        DeliveryInfo delivery;
        DeliveryResult result;
        std::string paid_id;  // a pay operation succeeded: the reward is paid with this id
    };

    bool round();  // true when there was work; throws DbError
    bool retention();  // one small batch of retention when due; true when it changed rows
    Outcome attempt(const DeliveryInfo& d);
    Verdict stripe_attempt(const DeliveryInfo& d, std::string* paid_id);
    Verdict webhook_attempt(const DeliveryInfo& d);
    void record(std::vector<Outcome>* outcomes);
    int max_attempts(const DeliveryInfo& d) const;
    const WebhookConfig* endpoint(const DeliveryInfo& d) const;  // its [[webhook]], or null

    const Config& config_;
    DatabaseUrl database_;
    std::string owner_;
    std::unique_ptr<Store> store_;
    Lifecycle lifecycle_;
    HttpClient http_;
    DeliveryTotals totals_;
    std::int64_t next_retention_ms_ = 0;
};

}  // namespace referral::worker
