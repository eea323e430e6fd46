// The reward lifecycle's queries and the delivery outbox (SPEC "Reward
// lifecycle", "Delivery to Stripe and to the application"). Every status
// change is one conditional UPDATE, so that two workers, or a worker and
// referralctl, never both make the same change.
#include <cstdlib>

#include "worker/store.h"

namespace referral::worker {
namespace {

// Statement ids of this file (store.cpp uses 1..99, db_pg.cpp 1000).
enum Q : int {
    kSetCustomer = 200,
    kCustomerOf,
    kRewardsForOrder,
    kReverse,
    kPromoteDue,
    kMarkPaid,
    kSetExternalId,
    kApprove,
    kReject,
    kInsertDelivery,
    kCancelUnsent,
    kClaim,
    kRecord,
    kRelease,
    kDeliveries,
    kDeliveriesAll,
    kDelivery,
    kRetryDelivery,
    kInReview,
    kCountBetween,
};


std::string delivery_columns(Db& db) {
    return "SELECT d.id, d.reward_id, d.target, d.operation, d.endpoint, d.event_id, d.payload, d.state,"
           " d.attempts, " + db.iso("d.next_attempt_at") + ", d.last_error, d.external_id, " +
           db.iso("d.created_at") + ", " + db.iso("d.done_at") + ", u.stripe_customer_id"
           " FROM referral_delivery d LEFT JOIN referral_reward w ON w.id = d.reward_id"
           " LEFT JOIN referral_user u ON u.user_id = w.user_id";
}

DeliveryInfo delivery_row(const Row& r) {
    DeliveryInfo d;
    d.id = to_int(r[0]);
    if (r[1]) d.reward_id = to_int(r[1]);
    d.target = str(r[2]);
    d.operation = str(r[3]);
    d.endpoint = str(r[4]);
    d.event_id = str(r[5]);
    d.payload = str(r[6]);
    d.state = str(r[7]);
    d.attempts = to_int(r[8]);
    d.next_attempt_at = str(r[9]);
    d.last_error = str(r[10]);
    d.external_id = str(r[11]);
    d.created_at = str(r[12]);
    d.done_at = str(r[13]);
    d.customer = str(r[14]);
    return d;
}

}  // namespace

void Store::set_customer(std::string_view user, std::string_view customer, std::string_view at) {
    ensure_user(user, at);
    db_->write(kSetCustomer,
              "UPDATE referral_user SET stripe_customer_id = $2 WHERE user_id = $1"
              " AND (stripe_customer_id IS NULL OR stripe_customer_id <> $2)",
              {Param::Text(user), Param::Text(customer)});
}

std::string Store::customer_of(std::string_view user) {
    Rows r = db_->query(kCustomerOf, "SELECT stripe_customer_id FROM referral_user WHERE user_id = $1",
                        {Param::Text(user)});
    return r.empty() ? std::string() : str(r[0][0]);
}

std::vector<RewardInfo> Store::rewards_for_order(std::string_view referred_user, std::string_view order) {
    return rewards_where(kRewardsForOrder, "WHERE referred_user_id = $1 AND order_id = $2 ORDER BY id",
                         {Param::Text(referred_user), Param::Text(order)});
}

bool Store::reverse_reward(std::int64_t id, std::string_view from, std::string_view at) {
    return db_->exec(kReverse,
                     "UPDATE referral_reward SET status = 'reversed', reversed_at = $3"
                     " WHERE id = $1 AND status = $2",
                     {Param::Int(id), Param::Text(from), Param::Text(at)}) > 0;
}

std::vector<std::int64_t> Store::promote_due(std::string_view now, int limit) {
    // status = 'pending' outside the subquery too: PostgreSQL re-checks it
    // on a row another worker promoted meanwhile, so none is promoted twice.
    std::string sql =
        "UPDATE referral_reward SET status = 'available', available_at = $1"
        " WHERE status = 'pending' AND id IN (SELECT id FROM referral_reward"
        " WHERE status = 'pending' AND hold_until <= $1 ORDER BY hold_until LIMIT $2" +
        std::string(is_pg(*db_) ? " FOR UPDATE SKIP LOCKED" : "") + ") RETURNING id";
    std::vector<std::int64_t> ids;
    for (const Row& r : db_->query(kPromoteDue, sql.c_str(), {Param::Text(now), Param::Int(limit)}))
        ids.push_back(to_int(r[0]));
    return ids;
}

bool Store::mark_paid(std::int64_t id, std::string_view external_id, std::string_view at) {
    return db_->exec(kMarkPaid,
                     "UPDATE referral_reward SET status = 'paid', paid_at = $3, external_id = $2"
                     " WHERE id = $1 AND status = 'available'",
                     {Param::Int(id), Param::OptText(external_id), Param::Text(at)}) > 0;
}

void Store::set_reward_external_id(std::int64_t id, std::string_view external_id) {
    db_->write(kSetExternalId, "UPDATE referral_reward SET external_id = $2 WHERE id = $1",
              {Param::Int(id), Param::OptText(external_id)});
}

bool Store::review_decision(std::int64_t id, bool approve, std::string_view reason, std::string_view at) {
    if (approve) {
        return db_->exec(kApprove,
                         "UPDATE referral_reward SET status = 'available', available_at = $2"
                         " WHERE id = $1 AND status = 'review'",
                         {Param::Int(id), Param::Text(at)}) > 0;
    }
    return db_->exec(kReject,
                     "UPDATE referral_reward SET status = 'rejected', reason = COALESCE($2, reason)"
                     " WHERE id = $1 AND status = 'review'",
                     {Param::Int(id), Param::OptText(reason)}) > 0;
}

void Store::insert_delivery(const NewDelivery& d) {
    db_->write(kInsertDelivery,
        "INSERT INTO referral_delivery (reward_id, target, operation, endpoint, event_id, payload, state,"
        " attempts, next_attempt_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7)"
        " ON CONFLICT DO NOTHING",
        {d.reward_id ? Param::Int(*d.reward_id) : Param::Null(), Param::Text(d.target),
         Param::Text(d.operation), Param::OptText(d.endpoint), Param::OptText(d.event_id),
         Param::OptText(d.payload), Param::Text(d.at)});
}

std::int64_t Store::cancel_unsent(std::int64_t reward_id, std::string_view why, std::string_view at) {
    return db_->exec(kCancelUnsent,
                     "UPDATE referral_delivery SET state = 'done', last_error = $2, done_at = $3"
                     " WHERE reward_id = $1 AND target = 'stripe' AND state = 'queued' AND attempts = 0"
                     " AND (lease_until IS NULL OR lease_until < $3)",
                     {Param::Int(reward_id), Param::Text(why), Param::Text(at)});
}

std::vector<DeliveryInfo> Store::claim_deliveries(std::string_view now, std::string_view lease_until,
                                                  std::string_view owner, int limit) {
    // A balance credit (or its reversal) needs the customer; a promotion
    // code is made at once (restricted to the customer only when known).
    const bool pg = is_pg(*db_);
    std::string pick =
        "SELECT d.id FROM referral_delivery d LEFT JOIN referral_reward w ON w.id = d.reward_id"
        " LEFT JOIN referral_user u ON u.user_id = w.user_id"
        " WHERE d.state = 'queued' AND d.next_attempt_at <= $1"
        " AND (d.lease_until IS NULL OR d.lease_until < $1)"
        " AND NOT (d.target = 'stripe' AND d.operation IN ('credit', 'reverse')"
        "          AND u.stripe_customer_id IS NULL)"
        " ORDER BY d.next_attempt_at, d.id LIMIT $4" +
        std::string(pg ? " FOR UPDATE OF d SKIP LOCKED" : "");
    std::string sql =
        "UPDATE referral_delivery SET lease_until = $2, leased_by = $3"
        " WHERE state = 'queued' AND (lease_until IS NULL OR lease_until < $1) AND id IN (" + pick +
        ") RETURNING id";
    std::vector<DeliveryInfo> out;
    Rows ids = db_->query(kClaim, sql.c_str(),
                          {Param::Text(now), Param::Text(lease_until), Param::Text(owner), Param::Int(limit)});
    for (const Row& r : ids) {
        if (auto d = delivery(to_int(r[0]))) out.push_back(std::move(*d));
    }
    return out;
}

bool Store::record_delivery(std::int64_t id, std::string_view owner, const DeliveryResult& r,
                            std::string_view at) {
    return db_->exec(kRecord,
                     "UPDATE referral_delivery SET state = $3, attempts = attempts + 1,"
                     " next_attempt_at = COALESCE($4, next_attempt_at), last_error = $5,"
                     " external_id = COALESCE($6, external_id), lease_until = NULL, leased_by = NULL,"
                     " done_at = $7"
                     " WHERE id = $1 AND leased_by = $2 AND state = 'queued'",
                     {Param::Int(id), Param::Text(owner), Param::Text(r.state),
                      Param::OptText(r.next_attempt_at), Param::OptText(r.error),
                      Param::OptText(r.external_id), Param::OptText(r.state == "queued" ? "" : at)}) > 0;
}

void Store::release_leases(std::string_view owner) {
    db_->write(kRelease,
              "UPDATE referral_delivery SET lease_until = NULL, leased_by = NULL"
              " WHERE leased_by = $1 AND state = 'queued'",
              {Param::Text(owner)});
}

std::vector<DeliveryInfo> Store::deliveries(std::string_view state, int limit) {
    std::vector<DeliveryInfo> out;
    Rows rows = state.empty()
        ? db_->query(kDeliveriesAll, (delivery_columns(*db_) + " ORDER BY d.id DESC LIMIT $1").c_str(),
                     {Param::Int(limit)})
        : db_->query(kDeliveries,
                     (delivery_columns(*db_) + " WHERE d.state = $1 ORDER BY d.id DESC LIMIT $2").c_str(),
                     {Param::Text(state), Param::Int(limit)});
    for (const Row& r : rows) out.push_back(delivery_row(r));
    return out;
}

std::optional<DeliveryInfo> Store::delivery(std::int64_t id) {
    Rows r = db_->query(kDelivery, (delivery_columns(*db_) + " WHERE d.id = $1").c_str(), {Param::Int(id)});
    if (r.empty()) return std::nullopt;
    return delivery_row(r[0]);
}

bool Store::retry_delivery(std::int64_t id, std::string_view at) {
    return db_->exec(kRetryDelivery,
                     "UPDATE referral_delivery SET state = 'queued', attempts = 0, next_attempt_at = $2,"
                     " done_at = NULL, lease_until = NULL, leased_by = NULL WHERE id = $1 AND state = 'dead'",
                     {Param::Int(id), Param::Text(at)}) > 0;
}

std::int64_t Store::count_referrer_rewards_between(std::string_view referral_type, std::string_view user,
                                                   std::string_view from, std::string_view to) {
    Rows r = db_->query(kCountBetween,
                        "SELECT count(*) FROM referral_reward WHERE user_id = $1 AND referral_type = $2"
                        " AND role = 'referrer' AND date_credited >= $3 AND date_credited < $4",
                        {Param::Text(user), Param::Text(referral_type), Param::Text(from), Param::Text(to)});
    return to_int(r[0][0]);
}

std::vector<RewardInfo> Store::rewards_in_review() {
    return rewards_where(kInReview, "WHERE status = 'review' ORDER BY id", {});
}

}  // namespace referral::worker
