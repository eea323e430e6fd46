// The main database as the worker and referralctl see it: the schema and
// its migrations, and every query, written once for SQLite and PostgreSQL.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "worker/config.h"
#include "worker/db.h"

namespace referral::worker {

constexpr int kSchemaVersion = 4;
// Characters of a code the worker or referralctl draws (62 symbols each).
constexpr std::size_t kGeneratedCodeLen = 40;

struct ReferralRef {
    std::int64_t id = 0;
    std::string user_id;  // the owner, the referrer
    std::int64_t expires_ms = 0;  // 0: never
    std::int64_t revoked_ms = 0;  // 0: not revoked
};

struct UserState {
    bool exists = false;
    std::optional<std::int64_t> referral_id;  // who referred them
    std::string plan = "free";
    std::string review_reason;  // linked under suspicion: rewards go to review
};

struct ResponseRow {
    std::string_view event_id;
    std::int64_t referral_id = 0;
    std::string_view action, visitor_id, user_id, ip, user_agent, target, referer, host;
    std::optional<std::int64_t> amount;
    std::string_view currency, order_id;
    std::string_view created_at;
};

struct RewardRow {
    std::string_view referral_type, user_id, role, referred_user_id;
    std::int64_t response_id = 0;
    const Grant* grant = nullptr;
    std::string_view date_credited;
    std::string_view status = "available";  // pending (hold), review or available
    std::string_view reason;                // why review
    std::string_view order_id;              // the qualifying conversion's order
    std::string_view hold_until;            // pending until then
    std::string_view available_at;          // when available at once
};

struct CodeInfo {
    std::int64_t id = 0;
    std::string user_id, code, label, created_at;
    std::string expires_at, revoked_at;  // ISO 8601 or empty
};

// What `referralctl forget` erased.
struct Forgotten {
    std::int64_t responses = 0;  // rows whose ip, user agent, URLs and visitor were cleared
    std::int64_t visitors = 0;   // referral_visitor rows deleted
    std::vector<std::string> visitor_ids;
};

struct RewardInfo {
    std::int64_t id = 0;
    std::string referral_type, user_id, role, referred_user_id, kind, currency;
    std::int64_t amount = 0;
    std::int64_t response_id = 0;
    std::string date_credited, date_redeemed;  // ISO 8601; date_redeemed empty when not
    bool redeemed = false;
    std::string status, reason, order_id, external_id, deliver;
    std::string hold_until, available_at, paid_at, reversed_at;  // ISO 8601 or empty
};

// A row of the delivery outbox (SPEC "Delivery to Stripe and to the
// application").
struct DeliveryInfo {
    std::int64_t id = 0;
    std::optional<std::int64_t> reward_id;
    std::string target, operation, endpoint, event_id, payload, state;
    std::int64_t attempts = 0;
    std::string next_attempt_at, last_error, external_id, created_at, done_at;  // ISO 8601 or empty
    // Joined for sending: the reward and its user's Stripe customer.
    std::string customer;
};

// What a new outbox row holds.
struct NewDelivery {
    std::optional<std::int64_t> reward_id;
    std::string_view target;     // "stripe" or "webhook"
    std::string_view operation;  // credit, reverse, promotion_code, deactivate; or the event type
    std::string_view endpoint;   // webhook URL
    std::string_view event_id;   // evt_...
    std::string_view payload;    // the webhook body
    std::string_view at;
};

// How one attempt ended, for record_delivery().
struct DeliveryResult {
    std::string state;            // queued (retry), done or dead
    std::string next_attempt_at;  // when queued
    std::string error;            // last_error (empty: cleared)
    std::string external_id;
};

struct StatsRow {
    std::string user_id;
    std::int64_t codes = 0, clicks = 0, signups = 0, subscriptions = 0, rewards = 0;
};

class Store {
public:
    explicit Store(std::unique_ptr<Db> db) : db_(std::move(db)) {}
    Db& db() { return *db_; }
    const char* backend() const noexcept { return db_->backend(); }

    // 0 when the schema does not exist yet.
    int schema_version();
    // Applies every missing migration up to `target` in one transaction;
    // returns the version found before.
    int migrate(int target = kSchemaVersion);
    // Throws DbError (not transient) with a message telling to run
    // `referralctl migrate` when the schema is older (or newer) than this
    // build's.
    void require_current_schema();

    void background_checkpoints() { db_->background_checkpoints(); }
    void begin() { db_->begin(); }
    void commit() { db_->commit(); }
    void rollback() noexcept { db_->rollback(); }

    // ---- the worker
    std::optional<ReferralRef> find_code(std::string_view code);
    std::optional<ReferralRef> find_referral(std::int64_t id);
    void add_click(const ClickRow& row) { db_->add_click(row); }
    std::int64_t flush_clicks() { return db_->flush_clicks(); }
    // Records a conversion's event id: *marked becomes 1, or stays 0 when
    // it was applied before, by the time the next read returns.
    void mark_event(std::string_view event_id, std::string_view at, std::int64_t* marked);
    // The response's id, or nullopt when a response with this event id exists.
    std::optional<std::int64_t> insert_response(const ResponseRow& row);
    UserState get_user(std::string_view user);
    // Creates the user's row (free, not referred) unless it exists.
    void ensure_user(std::string_view user, std::string_view at);
    // Links a user who was not referred yet; false when already linked.
    bool link_user(std::string_view user, std::int64_t referral_id, std::string_view at);
    // Sets the plan unless a newer event (`at`, the event's time) changed
    // it already (then the change is older and left out).
    void set_plan(std::string_view user, std::string_view plan, std::string_view at);
    // The referrer's plan, with their row locked until the transaction ends
    // (PostgreSQL: FOR UPDATE; SQLite holds the database write lock anyway),
    // so caps hold with several workers.
    std::string lock_plan(std::string_view user, std::string_view at);
    bool has_code(std::string_view user);
    // Creates `code` as the user's code (no label) if they have none:
    // *created becomes 1 by the time the next read returns, or stays 0 when
    // they have one or the code is taken.
    void add_first_code(std::string_view user, std::string_view code, std::string_view at,
                        std::int64_t* created);
    // The new code's id, or nullopt when the code or (user, label) exists.
    std::optional<std::int64_t> insert_code(std::string_view user, std::string_view code,
                                            std::string_view label, std::string_view at);
    std::int64_t count_referrer_rewards(std::string_view referral_type, std::string_view user);
    // The same, credited in [from, to) (a UTC day, for daily_cap).
    std::int64_t count_referrer_rewards_between(std::string_view referral_type, std::string_view user,
                                                std::string_view from, std::string_view to);
    // The reward's id, or nullopt when this rule already credited this role
    // for this referred user.
    std::optional<std::int64_t> insert_reward(const RewardRow& row);

    // ---- referralctl
    std::optional<CodeInfo> code_for(std::string_view user, std::string_view label);
    std::vector<CodeInfo> codes(std::string_view user);
    bool user_known(std::string_view user);
    std::vector<RewardInfo> rewards(std::string_view user);
    std::optional<RewardInfo> reward(std::int64_t id);
    // True when it was not redeemed before (and now is).
    bool redeem(std::int64_t id, std::string_view at);
    std::vector<StatsRow> stats();

    // ---- conversions before the signup that links them (store_abuse.cpp)
    // Keeps a conversion of a user not linked yet (the row's strings are
    // copied); false when this event is kept already.
    bool keep_early(const ResponseRow& row);
    // The user's kept conversions at or after `since`, oldest first, and
    // forgets all of the user's (they are applied now, or never can be).
    struct EarlyRow {
        std::string event_id, action, visitor_id, ip, user_agent, target, referer, host, currency, order_id,
            created_at;
        std::optional<std::int64_t> amount;
        std::int64_t ts_ms = 0;
    };
    std::vector<EarlyRow> take_early(std::string_view user, std::string_view since);
    // Kept conversions whose signup never came (older than the window).
    std::int64_t drop_early_before(std::string_view before);

    // ---- abuse and privacy (store_abuse.cpp)
    // The visitor's last stored click on this referral was in [from, to]?
    bool recent_click(std::int64_t referral_id, std::string_view visitor, std::string_view from,
                      std::string_view to);
    // Records a stored click for click_dedup (the later time wins).
    void note_click(std::int64_t referral_id, std::string_view visitor, std::string_view at);
    // Forgets last clicks older than `before` (they can no longer dedup anything).
    std::int64_t drop_clicks_before(std::string_view before);
    // Records that `user` was seen with `visitor` and `ip` (either may be empty).
    void saw_visitor(std::string_view user, std::string_view visitor, std::string_view ip, std::string_view at);
    bool seen_with_visitor(std::string_view user, std::string_view visitor);
    // `user`'s conversions used `ip` since `since`?
    bool seen_with_ip(std::string_view user, std::string_view ip, std::string_view since);
    void set_review_reason(std::string_view user, std::string_view reason);
    void add_counter(std::string_view name, std::int64_t delta);
    std::vector<std::pair<std::string, std::int64_t>> counters();
    bool set_code_expiry(std::int64_t referral_id, std::string_view expires_at);
    // False when the code does not exist or was revoked before.
    bool revoke_code(std::string_view code, std::string_view at);
    std::optional<CodeInfo> code_info(std::string_view code);
    // Clears ip, user_agent, target and referer of responses older than
    // `before` (at most `limit` rows) and deletes visitor rows last seen
    // before it; how many rows changed.
    std::int64_t apply_retention(std::string_view before, int limit);
    Forgotten forget(std::string_view user);

    // ---- the reward lifecycle and the outbox (store_lifecycle.cpp)
    void set_customer(std::string_view user, std::string_view customer, std::string_view at);
    std::string customer_of(std::string_view user);
    // Rewards earned by `referred_user`'s conversion with `order`.
    std::vector<RewardInfo> rewards_for_order(std::string_view referred_user, std::string_view order);
    // `from` -> reversed; false when the status was not `from` any more.
    bool reverse_reward(std::int64_t id, std::string_view from, std::string_view at);
    // Pending rewards whose hold has passed become available; their ids.
    std::vector<std::int64_t> promote_due(std::string_view now, int limit);
    // available -> paid with the provider's id; false when not available.
    bool mark_paid(std::int64_t id, std::string_view external_id, std::string_view at);
    void set_reward_external_id(std::int64_t id, std::string_view external_id);
    // review -> available or rejected; false when not in review.
    bool review_decision(std::int64_t id, bool approve, std::string_view reason, std::string_view at);
    // Queues an outbox row; nothing when this operation exists already.
    void insert_delivery(const NewDelivery& d);
    // Queued Stripe rows for `reward_id` never attempted and not leased: done, with `why`.
    std::int64_t cancel_unsent(std::int64_t reward_id, std::string_view why, std::string_view at);
    // Leases up to `limit` due rows to `owner` until `lease_until`. A
    // stripe_balance credit waits (is not claimed) while its user has no
    // Stripe customer. PostgreSQL: FOR UPDATE SKIP LOCKED.
    std::vector<DeliveryInfo> claim_deliveries(std::string_view now, std::string_view lease_until,
                                               std::string_view owner, int limit);
    // Records an attempt if `owner` still holds the lease; false otherwise.
    bool record_delivery(std::int64_t id, std::string_view owner, const DeliveryResult& r,
                         std::string_view at);
    // Gives up the leases `owner` holds (a restart under the same name).
    void release_leases(std::string_view owner);
    std::vector<DeliveryInfo> deliveries(std::string_view state, int limit);
    std::optional<DeliveryInfo> delivery(std::int64_t id);
    // dead -> queued, attempts 0, due now; false when not dead.
    bool retry_delivery(std::int64_t id, std::string_view at);
    std::vector<RewardInfo> rewards_in_review();

private:
    std::vector<RewardInfo> rewards_where(int statement, const std::string& where,
                                          std::initializer_list<Param> params);

    std::unique_ptr<Db> db_;
};

bool is_pg(Db& db);
// The columns of a CodeInfo (SELECT ... FROM referral), and one row of them.
std::string code_columns(Db& db);
CodeInfo code_row(const Row& r);

// Opens the database named by `url` and wraps it.
std::unique_ptr<Store> open_store(const DatabaseUrl& url, bool create);

// A code for `user` with `label`, creating it (40 random characters,
// retried on collision) when missing. Sets *created. Runs inside the
// caller's transaction.
CodeInfo ensure_code(Store& store, std::string_view user, std::string_view label,
                     std::string_view at, bool* created);

}  // namespace referral::worker
