// What events do (SPEC "What events do"): validation of a stream entry,
// then its effect on the main database inside the batch's transaction.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "worker/config.h"
#include "worker/lifecycle.h"
#include "worker/store.h"

namespace referral::worker {

struct Field {
    std::string_view name, value;
};

// A validated event (schema version 1). Views point into the stream
// entry; the cleaned texts are owned.
struct Event {
    std::string_view id, type, code, visitor;
    std::int64_t ts = 0;
    std::int64_t first_ts = 0;  // 0: none
    std::string ip, ua, url, referer, host;
    // conversions
    std::string_view action, user, currency, order, customer;
    std::optional<std::int64_t> amount;
    std::string created_at;  // ts as database text
};

// Event times the database can hold: 9999-12-31T23:59:59.999Z at most.
constexpr std::int64_t kMaxTs = 253402300799999LL;
// How much later than ts a first_ts may be (clocks of two nginx hosts).
constexpr std::int64_t kMaxClockSkewMs = 5 * 60 * 1000;

// Empty string when the entry is a valid event (filled into *out); else
// why it can never be applied ("missing field id", "unknown type \"x\"", ...).
std::string parse_event(const std::vector<Field>& fields, Event* out);

struct Counters {
    std::int64_t events = 0;         // applied (valid) events, duplicates included
    std::int64_t clicks = 0;         // click responses stored
    std::int64_t conversions = 0;    // conversion events applied
    std::int64_t duplicates = 0;     // events seen before (same id)
    std::int64_t unknown_code = 0;   // clicks and signups with a code nobody owns
    std::int64_t linked = 0;         // referred users linked to their referrer
    std::int64_t self_referral = 0;
    std::int64_t double_referral = 0;
    std::int64_t out_of_window = 0;
    std::int64_t responses = 0;      // conversion responses stored
    std::int64_t rewards = 0;        // rewarded referrals (both sides credited)
    std::int64_t capped = 0;         // rule matched but the referrer's cap was reached
    std::int64_t reversed = 0;       // rewards reversed by a refund or chargeback
    std::int64_t reviewed = 0;       // rewarded referrals sent to review (daily_cap)
    std::int64_t refund_unknown = 0; // refunds naming no order that earned a reward
    std::int64_t refund_outside = 0; // refunds after the rule's clawback window
    std::int64_t customers = 0;      // Stripe customer ids learnt from conversions
    std::int64_t click_dedup = 0;    // clicks within click_dedup of the visitor's last on the code
    std::int64_t code_expired = 0;   // clicks and signups on a code past its expires_at
    std::int64_t code_revoked = 0;   // ... on a revoked code
    std::int64_t same_ip = 0;        // signups from an address the referrer used: to review
    std::int64_t early = 0;          // conversions kept until the signup that links their user
    std::int64_t replayed = 0;       // kept conversions applied when their signup linked the user
    std::int64_t codes_created = 0;
    std::int64_t dead = 0;           // entries sent to the dead stream
    std::int64_t trimmed = 0;        // pending entries whose data was trimmed: acknowledged unapplied

    void add(const Counters& o);
    bool any() const;
    std::string describe() const;
};

class Processor {
public:
    explicit Processor(Config config) : config_(std::move(config)), lifecycle_(config_) {}
    // No Stripe, no webhooks: the rules alone (tests).
    Processor(std::vector<RewardRule> rules, std::int64_t window_ms) : lifecycle_(config_) {
        config_.rules = std::move(rules);
        config_.window_ms = window_ms;
    }
    Processor(const Processor&) = delete;
    Processor& operator=(const Processor&) = delete;

    // Applies one event inside the current transaction.
    void apply(Store& store, const Event& ev, Counters* c);
    // Counts the batch's click rows (stored or duplicates); they reference
    // its events: call once, at the end of the batch, before they go away.
    void flush(Store& store, Counters* c);
    // After a rollback: forget what was learnt inside the transaction.
    void forget();
    // A new batch: codes may have been revoked or expired since the last.
    void start_batch();
    // Adds what `c` counted to the database's counters (referralctl stats),
    // inside the transaction that applied it.
    static void persist(Store& store, const Counters& c);

private:
    std::optional<ReferralRef> lookup_code(Store& store, std::string_view code);
    std::string owner_of(Store& store, std::int64_t referral_id);
    void apply_click(Store& store, const Event& ev, Counters* c);
    void apply_conversion(Store& store, const Event& ev, Counters* c);
    // The response row of a conversion (views into `ev`).
    static ResponseRow response_row(const Event& ev, std::int64_t referral_id);
    // The kept conversions of a user just linked through `referral_id`.
    void apply_early(Store& store, const Event& signup, const UserState& user, Counters* c);
    void credit_rewards(Store& store, const Event& ev, const UserState& user, std::int64_t response_id,
                        Counters* c);
    // Why a signup through `ref` must not be linked (a counter), or null.
    std::int64_t* refuse_link(Store& store, const Event& ev, const ReferralRef& ref, const UserState& user,
                              Counters* c);
    // Expired or revoked at the event's time: its counter, or null.
    static std::int64_t* dead_code(const ReferralRef& ref, std::int64_t ts, Counters* c);

    Config config_;
    Lifecycle lifecycle_;  // refers to config_
    std::int64_t pending_clicks_ = 0;
    // Codes and owners never change once created: safe to cache.
    std::unordered_map<std::string, ReferralRef> codes_;
    std::string last_code_;  // most clicks of a batch carry few codes
    ReferralRef last_ref_;
    std::unordered_map<std::int64_t, std::string> owners_;
};

}  // namespace referral::worker
