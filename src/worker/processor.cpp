#include "worker/processor.h"

#include <algorithm>
#include <cstring>

#include "core/code.h"
#include "core/event.h"
#include "core/random.h"
#include "worker/util.h"

namespace referral::worker {

// ------------------------------------------------------------- parsing

namespace {

enum FieldId { fV, fId, fType, fTs, fCode, fVisitor, fFirstTs, fIp, fUa, fUrl, fReferer, fHost,
               fAction, fUser, fAmount, fCurrency, fOrder, fCustomer, fCount };

int field_id(std::string_view n) noexcept {
    switch (n.size()) {
        case 1: return n == "v" ? fV : -1;
        case 2: return n == "id" ? fId : n == "ts" ? fTs : n == "ip" ? fIp : n == "ua" ? fUa : -1;
        case 3: return n == "url" ? fUrl : -1;
        case 4: return n == "type" ? fType : n == "code" ? fCode : n == "host" ? fHost : n == "user" ? fUser : -1;
        case 5: return n == "order" ? fOrder : -1;
        case 6: return n == "action" ? fAction : n == "amount" ? fAmount : -1;
        case 7: return n == "visitor" ? fVisitor : n == "referer" ? fReferer : -1;
        case 8: return n == "first_ts" ? fFirstTs : n == "currency" ? fCurrency : n == "customer" ? fCustomer : -1;
        default: return -1;
    }
}

const char* const kFieldNames[fCount] = {"v", "id", "type", "ts", "code", "visitor", "first_ts", "ip",
                                          "ua", "url", "referer", "host", "action", "user", "amount",
                                          "currency", "order", "customer"};

std::string quoted(std::string_view v) {
    std::string s = clean_text(v, 40);
    if (v.size() > 40) s += "...";
    return "\"" + s + "\"";
}

}  // namespace

std::string parse_event(const std::vector<Field>& fields, Event* out) {
    std::string_view f[fCount];
    bool seen[fCount] = {};
    for (const Field& x : fields) {
        int id = field_id(x.name);
        if (id < 0) continue;  // fields of a later minor revision are ignored
        if (seen[id]) return std::string("duplicate field ") + kFieldNames[id];
        seen[id] = true;
        f[id] = x.value;
    }
    for (int id : {fV, fId, fType, fTs, fCode}) {
        if (!seen[id]) return std::string("missing field ") + kFieldNames[id];
    }
    if (f[fV] != "1") return "unsupported schema version " + quoted(f[fV]);
    if (!is_id(f[fId])) return "bad id " + quoted(f[fId]);
    Event& e = *out;
    e = Event();
    e.id = f[fId];
    e.type = f[fType];
    bool click = e.type == "click";
    if (!click && e.type != "conversion") return "unknown type " + quoted(f[fType]);
    if (!parse_int64(f[fTs], &e.ts) || e.ts <= 0 || e.ts > kMaxTs) return "bad ts " + quoted(f[fTs]);
    e.code = f[fCode];
    if (click ? !is_valid_code(e.code) : (!e.code.empty() && !is_valid_code(e.code)))
        return "bad code " + quoted(f[fCode]);
    e.visitor = f[fVisitor];
    if (!e.visitor.empty() && !is_id(e.visitor)) return "bad visitor " + quoted(f[fVisitor]);
    // first_ts is when the visitor first came: not after this event, but
    // for the clock skew between two nginx hosts.
    if (!f[fFirstTs].empty() && (!parse_int64(f[fFirstTs], &e.first_ts) || e.first_ts < 0 ||
                                 e.first_ts > e.ts + kMaxClockSkewMs))
        return "bad first_ts " + quoted(f[fFirstTs]);
    if (!click) {
        if (!seen[fAction]) return "missing field action";
        if (!seen[fUser]) return "missing field user";
        e.action = f[fAction];
        if (!is_action(e.action)) return "bad action " + quoted(f[fAction]);
        e.user = f[fUser];
        if (!is_token(e.user, kUserMaxLen)) return "bad user " + quoted(f[fUser]);
        if (!f[fAmount].empty()) {
            std::int64_t a;
            if (!parse_int64(f[fAmount], &a)) return "bad amount " + quoted(f[fAmount]);
            e.amount = a;
        }
        e.currency = f[fCurrency];
        if (!e.currency.empty() && !is_currency(e.currency)) return "bad currency " + quoted(f[fCurrency]);
        e.order = f[fOrder];
        if (!e.order.empty() && !is_token(e.order, kOrderMaxLen)) return "bad order " + quoted(f[fOrder]);
        e.customer = f[fCustomer];
        if (!e.customer.empty() && !is_customer(e.customer))
            return "bad customer " + quoted(f[fCustomer]);
    }
    e.ip = clean_text(f[fIp], kIpMaxLen);
    e.ua = clean_text(f[fUa], kUaMaxLen);
    e.url = clean_text(f[fUrl], kUrlMaxLen);
    e.referer = clean_text(f[fReferer], kRefererMaxLen);
    e.host = clean_text(f[fHost], kHostMaxLen);
    e.created_at = format_db_time(e.ts);
    return std::string();
}

// ------------------------------------------------------------ counters

void Counters::add(const Counters& o) {
    events += o.events;
    clicks += o.clicks;
    conversions += o.conversions;
    duplicates += o.duplicates;
    unknown_code += o.unknown_code;
    linked += o.linked;
    self_referral += o.self_referral;
    double_referral += o.double_referral;
    out_of_window += o.out_of_window;
    responses += o.responses;
    rewards += o.rewards;
    capped += o.capped;
    reversed += o.reversed;
    reviewed += o.reviewed;
    click_dedup += o.click_dedup;
    code_expired += o.code_expired;
    code_revoked += o.code_revoked;
    same_ip += o.same_ip;
    early += o.early;
    replayed += o.replayed;
    refund_unknown += o.refund_unknown;
    refund_outside += o.refund_outside;
    customers += o.customers;
    codes_created += o.codes_created;
    dead += o.dead;
    trimmed += o.trimmed;
}

bool Counters::any() const { return events || dead || trimmed; }

std::string Counters::describe() const {
    std::string s;
    auto add = [&](const char* name, std::int64_t v) {
        if (!s.empty()) s += ", ";
        s += name;
        s += "=";
        s += std::to_string(v);
    };
    add("events", events);
    add("clicks", clicks);
    add("conversions", conversions);
    add("duplicates", duplicates);
    add("unknown_code", unknown_code);
    add("linked", linked);
    add("self_referral", self_referral);
    add("double_referral", double_referral);
    add("out_of_window", out_of_window);
    add("responses", responses);
    add("rewards", rewards);
    add("capped", capped);
    add("reversed", reversed);
    add("reviewed", reviewed);
    add("click_dedup", click_dedup);
    add("code_expired", code_expired);
    add("code_revoked", code_revoked);
    add("same_ip", same_ip);
    add("early", early);
    add("replayed", replayed);
    add("refund_unknown_order", refund_unknown);
    add("refund_outside_window", refund_outside);
    add("customers", customers);
    add("codes_created", codes_created);
    add("dead", dead);
    add("trimmed", trimmed);
    return s;
}

// ------------------------------------------------------------ applying

void Processor::forget() {
    codes_.clear();
    last_code_.clear();
    owners_.clear();
    pending_clicks_ = 0;
}

void Processor::start_batch() {
    codes_.clear();
    last_code_.clear();
}

void Processor::persist(Store& store, const Counters& c) {
    const std::pair<const char*, std::int64_t> figures[] = {
        {"duplicates", c.duplicates},         {"unknown_code", c.unknown_code},
        {"self_referral", c.self_referral},   {"double_referral", c.double_referral},
        {"out_of_window", c.out_of_window},   {"capped", c.capped},
        {"reviewed", c.reviewed},             {"reversed", c.reversed},
        {"refund_unknown_order", c.refund_unknown}, {"refund_outside_window", c.refund_outside},
        {"click_dedup", c.click_dedup},       {"code_expired", c.code_expired},
        {"code_revoked", c.code_revoked},     {"same_ip", c.same_ip},
        {"early", c.early},                   {"replayed", c.replayed},
    };
    for (const auto& f : figures) {
        if (f.second != 0) store.add_counter(f.first, f.second);
    }
}

std::int64_t* Processor::dead_code(const ReferralRef& ref, std::int64_t ts, Counters* c) {
    if (ref.revoked_ms > 0 && ref.revoked_ms <= ts) return &c->code_revoked;
    if (ref.expires_ms > 0 && ref.expires_ms <= ts) return &c->code_expired;
    return nullptr;
}

std::optional<ReferralRef> Processor::lookup_code(Store& store, std::string_view code) {
    if (!last_code_.empty() && code == last_code_) return last_ref_;
    std::string key(code);
    auto it = codes_.find(key);
    if (it != codes_.end()) {
        last_code_ = it->first;
        last_ref_ = it->second;
        return it->second;
    }
    auto ref = store.find_code(code);
    if (!ref) return std::nullopt;  // unknown codes are not cached: one may be created later
    if (codes_.size() > 200000) codes_.clear();
    codes_.emplace(key, *ref);
    last_code_ = std::move(key);
    last_ref_ = *ref;
    return ref;
}

std::string Processor::owner_of(Store& store, std::int64_t referral_id) {
    auto it = owners_.find(referral_id);
    if (it != owners_.end()) return it->second;
    auto ref = store.find_referral(referral_id);
    std::string owner = ref ? ref->user_id : std::string();
    if (owners_.size() > 200000) owners_.clear();
    owners_.emplace(referral_id, owner);
    return owner;
}

void Processor::apply(Store& store, const Event& ev, Counters* c) {
    c->events++;
    if (ev.type == "click") {
        apply_click(store, ev, c);
    } else {
        apply_conversion(store, ev, c);
    }
}

void Processor::flush(Store& store, Counters* c) {
    std::int64_t stored = store.flush_clicks();
    c->clicks += stored;
    c->duplicates += pending_clicks_ - stored;
    pending_clicks_ = 0;
}

void Processor::apply_click(Store& store, const Event& ev, Counters* c) {
    auto ref = lookup_code(store, ev.code);
    if (!ref) {
        c->unknown_code++;
        return;
    }
    // A click on an expired or revoked code is still a click on that
    // referral (stored, counted); it just attributes nothing later.
    if (std::int64_t* why = dead_code(*ref, ev.ts, c)) (*why)++;
    if (config_.click_dedup_ms > 0 && !ev.visitor.empty()) {
        // Not stored when a stored click of this visitor on this code is
        // less than click_dedup older. note_click() writes inside this
        // transaction, so earlier clicks of the same batch count too.
        const std::int64_t since = ev.ts - config_.click_dedup_ms + 1;
        if (store.recent_click(ref->id, ev.visitor, format_db_time(since), ev.created_at)) {
            c->click_dedup++;
            return;
        }
        store.note_click(ref->id, ev.visitor, ev.created_at);
    }
    ClickRow row;
    row.event_id = ev.id;
    row.referral_id = ref->id;
    row.visitor_id = ev.visitor;
    row.ip = ev.ip;
    row.user_agent = ev.ua;
    row.target = ev.url;
    row.referer = ev.referer;
    row.host = ev.host;
    row.created_at = ev.created_at;
    store.add_click(row);
    pending_clicks_++;
}

void Processor::apply_conversion(Store& store, const Event& ev, Counters* c) {
    // Clicks before this conversion are written before its statements
    // (PostgreSQL sends the batch's clicks ahead of the next statement);
    // they are counted once, by flush() at the end of the batch.
    // The mark, a signup's user row and first code, and the read of the
    // user: one round trip (the counts are in once get_user() returns).
    // For an event applied before, the row and the code exist: no-ops.
    const std::string_view at = ev.created_at;
    const bool signup = ev.action == "signup";
    std::int64_t marked = 0, code_created = 0;
    store.mark_event(ev.id, at, &marked);
    if (signup) {
        store.ensure_user(ev.user, at);
        store.add_first_code(ev.user, random_code(kGeneratedCodeLen), at, &code_created);
    }
    UserState user = store.get_user(ev.user);
    if (marked == 0) {
        c->duplicates++;
        return;
    }
    c->conversions++;

    if (!ev.customer.empty()) {
        store.set_customer(ev.user, ev.customer, at);
        c->customers++;
    }
    bool seen_recorded = false;
    auto record_seen = [&] {
        // Every conversion records the device and address its user was
        // seen with (self-referral by device, same-IP review).
        if (seen_recorded || (ev.visitor.empty() && ev.ip.empty())) return;
        seen_recorded = true;
        store.saw_visitor(ev.user, ev.visitor, ev.ip, at);
    };

    if (signup) {
        // Not created: they have a code, or the random one is taken (then
        // the general path draws again).
        bool created = code_created > 0;
        if (!created && !store.has_code(ev.user)) ensure_code(store, ev.user, "", at, &created);
        if (created) c->codes_created++;
        if (!ev.code.empty()) {
            auto ref = lookup_code(store, ev.code);
            std::int64_t attributed = ev.first_ts > 0 ? ev.first_ts : ev.ts;
            std::int64_t* refused = nullptr;
            if (!ref) {
                c->unknown_code++;
            } else if ((refused = refuse_link(store, ev, *ref, user, c)) != nullptr) {
                (*refused)++;
            } else if (ev.ts - attributed > config_.window_ms) {
                c->out_of_window++;
            } else if (store.link_user(ev.user, ref->id, at)) {
                user.referral_id = ref->id;
                c->linked++;
                if (config_.review_same_ip && !ev.ip.empty() &&
                    store.seen_with_ip(ref->user_id, ev.ip, format_db_time(ev.ts - 86400LL * 1000))) {
                    // The referrer's own conversions used this address in
                    // the last 24 h: every reward of this friend is reviewed.
                    store.set_review_reason(ev.user, "same_ip");
                    user.review_reason = "same_ip";
                    c->same_ip++;
                }
                lifecycle_.linked(store, ev.user, ref->user_id, ev.code, at);
                apply_early(store, ev, user, c);
            } else {
                c->double_referral++;  // linked meanwhile by another worker
                user = store.get_user(ev.user);
            }
        }
    } else if (ev.action == "subscribe" || ev.action == "unsubscribe") {
        store.ensure_user(ev.user, at);
        store.set_plan(ev.user, ev.action == "subscribe" ? "paid" : "free", at);
    } else if (ev.action == "refund" || ev.action == "chargeback") {
        std::int64_t reversed = 0;
        switch (lifecycle_.refund(store, ev.user, ev.order, ev.ts, at, &reversed)) {
            case RefundOutcome::reversed: c->reversed += reversed; break;
            case RefundOutcome::unknown_order: c->refund_unknown++; break;
            case RefundOutcome::outside_window: c->refund_outside++; break;
            case RefundOutcome::already_final: break;
        }
    }

    record_seen();
    ResponseRow row = response_row(ev, 0);
    if (!user.referral_id && ev.action != "signup" && !ev.code.empty()) {
        // A conversion carrying a code from a user not linked (yet): their
        // signup may be in another worker's batch right now. Its insert of
        // the user's row holds our ensure_user until it commits; look
        // again, else keep the conversion for that signup (within the
        // window; the delivery loop drops what is older).
        store.ensure_user(ev.user, at);
        user = store.get_user(ev.user);
        if (!user.referral_id) {
            if (store.keep_early(row)) c->early++;
            return;
        }
    }
    if (!user.referral_id) return;
    row.referral_id = *user.referral_id;
    auto response = store.insert_response(row);
    if (!response) return;
    c->responses++;
    credit_rewards(store, ev, user, *response, c);
}

ResponseRow Processor::response_row(const Event& ev, std::int64_t referral_id) {
    ResponseRow row;
    row.event_id = ev.id;
    row.referral_id = referral_id;
    row.action = ev.action;
    row.visitor_id = ev.visitor;
    row.user_id = ev.user;
    row.ip = ev.ip;
    row.user_agent = ev.ua;
    row.target = ev.url;
    row.referer = ev.referer;
    row.host = ev.host;
    row.amount = ev.amount;
    row.currency = ev.currency;
    row.order_id = ev.order;
    row.created_at = ev.created_at;
    return row;
}

void Processor::apply_early(Store& store, const Event& signup, const UserState& user, Counters* c) {
    auto kept = store.take_early(signup.user, format_db_time(signup.ts - config_.window_ms));
    for (const Store::EarlyRow& k : kept) {
        Event e;
        e.id = k.event_id;
        e.type = "conversion";
        e.action = k.action;
        e.user = signup.user;
        e.visitor = k.visitor_id;
        e.ip = k.ip;
        e.ua = k.user_agent;
        e.url = k.target;
        e.referer = k.referer;
        e.host = k.host;
        e.order = k.order_id;
        e.currency = k.currency;
        e.amount = k.amount;
        e.ts = k.ts_ms;
        e.created_at = k.created_at;
        ResponseRow row = response_row(e, *user.referral_id);
        auto response = store.insert_response(row);
        if (!response) continue;
        c->responses++;
        c->replayed++;
        credit_rewards(store, e, user, *response, c);
    }
}

std::int64_t* Processor::refuse_link(Store& store, const Event& ev, const ReferralRef& ref, const UserState& user,
                                     Counters* c) {
    if (ref.user_id == ev.user) return &c->self_referral;
    // The code's owner was seen on this very device: a second account.
    if (!ev.visitor.empty() && store.seen_with_visitor(ref.user_id, ev.visitor)) return &c->self_referral;
    if (std::int64_t* why = dead_code(ref, ev.ts, c)) return why;
    if (user.referral_id) return &c->double_referral;
    return nullptr;
}

// Each rule whose action matches credits both sides once, within the cap:
// pending during the rule's hold, else available at once.
void Processor::credit_rewards(Store& store, const Event& ev, const UserState& user,
                               std::int64_t response_id, Counters* c) {
    const std::int64_t referral_id = *user.referral_id;
    const std::string_view at = ev.created_at;
    std::string referrer;
    for (const RewardRule& rule : config_.rules) {
        if (rule.action != ev.action) continue;
        if (referrer.empty()) referrer = owner_of(store, referral_id);
        if (referrer.empty()) return;
        // The referrer's plan at this moment, their row locked so that two
        // workers cannot both pass the cap.
        std::string plan = store.lock_plan(referrer, at);
        if (!rule_applies(rule, ev.action, plan)) continue;
        if (rule.cap >= 0 && store.count_referrer_rewards(rule.name, referrer) >= rule.cap) {
            c->capped++;
            continue;
        }
        // Past the referrer's daily cap the rewards wait for a person's review.
        std::string_view reason = user.review_reason;
        bool review = !reason.empty();
        if (review) c->reviewed++;
        if (!review && rule.daily_cap >= 0) {
            const std::int64_t day = ev.ts - ev.ts % (86400LL * 1000);
            review = store.count_referrer_rewards_between(rule.name, referrer, format_db_time(day),
                                                          format_db_time(day + 86400LL * 1000)) >= rule.daily_cap;
            if (review) {
                c->reviewed++;
                reason = "daily_cap";
            }
        }
        const std::string hold_until = rule.hold_ms > 0 ? format_db_time(ev.ts + rule.hold_ms) : std::string();
        RewardRow r;
        r.referral_type = rule.name;
        r.user_id = referrer;
        r.role = "referrer";
        r.referred_user_id = ev.user;
        r.response_id = response_id;
        r.grant = &rule.referrer;
        r.date_credited = at;
        r.order_id = ev.order;
        r.status = review ? "review" : rule.hold_ms > 0 ? "pending" : "available";
        r.reason = review ? reason : std::string_view();
        r.hold_until = hold_until;
        r.available_at = r.status == "available" ? at : std::string_view();
        auto referrer_reward = store.insert_reward(r);
        if (!referrer_reward) continue;  // this rule already paid for this friend
        RewardRow referee = r;
        referee.user_id = ev.user;
        referee.role = "referee";
        referee.grant = &rule.referee;
        auto referee_reward = store.insert_reward(referee);
        lifecycle_.created(store, *referrer_reward, r, at);
        if (referee_reward) lifecycle_.created(store, *referee_reward, referee, at);
        c->rewards++;
    }
}

}  // namespace referral::worker
