// GET /metrics: what an operator alerts on, in Prometheus text format
// (0.0.4). From Redis (the config's redis, stream and group): the stream's
// length, the consumer group's lag and pending entries, the dead letters.
// From the database: rewards by status, deliveries queued and dead, the
// oldest queued delivery's age. A source that does not answer is reported
// by referral_redis_up / referral_database_up = 0, never by a failed scrape.
#include <cmath>
#include <sstream>

#include "ctl/http.h"
#include "worker/queries.h"
#include "worker/redis.h"
#include "worker/util.h"

namespace referral::ctl {

using namespace referral::worker;

namespace {

// A label value: backslash, double quote and newline escaped.
std::string label(const std::string& v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

class Text {
public:
    void family(const char* name, const char* type, const char* help) {
        out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
    }
    void sample(const std::string& name_and_labels, double v) {
        out_ << name_and_labels << " ";
        if (std::isnan(v)) {
            out_ << "NaN";
        } else if (v == std::floor(v) && std::fabs(v) < 1e15) {
            out_ << static_cast<long long>(v);
        } else {
            out_ << v;
        }
        out_ << "\n";
    }
    std::string str() const { return out_.str(); }

private:
    std::ostringstream out_;
};

// Field `key` of a RESP2 map reply (a flat array of key, value).
const redisReply* field(const redisReply* r, const char* key) {
    if (!r || r->type != REDIS_REPLY_ARRAY) return nullptr;
    for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply* k = r->element[i];
        if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) && std::string(k->str, k->len) == key)
            return r->element[i + 1];
    }
    return nullptr;
}

double number(const redisReply* r) {
    if (!r || r->type != REDIS_REPLY_INTEGER) return NAN;  // e.g. lag is nil when Redis cannot tell
    return static_cast<double>(r->integer);
}

struct RedisFigures {
    bool up = false;
    std::string error;
    double length = 0, dead = 0;
    bool group_exists = false;
    double lag = NAN, pending = 0, consumers = 0;
    double min_idle_s = NAN;  // the most recently active consumer's idle time
};

RedisFigures redis_figures(const Config& config) {
    RedisFigures f;
    RedisAddress addr;
    std::string err;
    if (!parse_redis_url(config.redis, &addr, &err)) {
        f.error = err;
        return f;
    }
    try {
        Redis redis(addr, 1000);
        redis.connect();
        Reply len = redis.command({"XLEN", config.stream});
        f.length = number(len.get());
        std::string dead_key = config.stream + ":dead";
        Reply dead = redis.command({"XLEN", dead_key});
        f.dead = number(dead.get());
        f.up = true;
        if (f.length > 0 || redis.command({"EXISTS", config.stream})->integer > 0) {
            Reply groups = redis.command({"XINFO", "GROUPS", config.stream});
            for (std::size_t i = 0; groups && i < groups->elements; i++) {
                const redisReply* g = groups->element[i];
                const redisReply* name = field(g, "name");
                if (!name || name->type != REDIS_REPLY_STRING || std::string(name->str, name->len) != config.group)
                    continue;
                f.group_exists = true;
                f.pending = number(field(g, "pending"));
                f.consumers = number(field(g, "consumers"));
                f.lag = number(field(g, "lag"));
            }
            if (f.group_exists && f.consumers > 0) {
                Reply cs = redis.command({"XINFO", "CONSUMERS", config.stream, config.group});
                for (std::size_t i = 0; cs && i < cs->elements; i++) {
                    double idle = number(field(cs->element[i], "idle")) / 1000.0;
                    if (!std::isnan(idle) && (std::isnan(f.min_idle_s) || idle < f.min_idle_s)) f.min_idle_s = idle;
                }
            }
        }
    } catch (const RedisError& e) {
        f.up = false;
        f.error = e.what();
    }
    return f;
}

}  // namespace

void handle_metrics(Context& ctx, httplib::Response& res) {
    Text t;
    RedisFigures r = redis_figures(ctx.config);
    std::string group = "{group=\"" + label(ctx.config.group) + "\"}";
    t.family("referral_redis_up", "gauge", "1 when Redis answered this scrape, 0 when it did not.");
    t.sample("referral_redis_up", r.up ? 1 : 0);
    if (r.up) {
        t.family("referral_stream_length", "gauge", "Entries in the event stream (XLEN).");
        t.sample("referral_stream_length", r.length);
        t.family("referral_stream_dead_length", "gauge", "Entries the worker could never apply (<stream>:dead).");
        t.sample("referral_stream_dead_length", r.dead);
        t.family("referral_consumer_group_exists", "gauge", "1 when the worker's consumer group exists.");
        t.sample("referral_consumer_group_exists" + group, r.group_exists ? 1 : 0);
        if (r.group_exists) {
            t.family("referral_consumer_group_lag", "gauge",
                     "Entries not yet delivered to the group (XINFO GROUPS lag; NaN when Redis cannot tell).");
            t.sample("referral_consumer_group_lag" + group, r.lag);
            t.family("referral_consumer_group_pending", "gauge", "Entries delivered but not yet acknowledged.");
            t.sample("referral_consumer_group_pending" + group, r.pending);
            t.family("referral_consumer_group_consumers", "gauge", "Consumers of the group.");
            t.sample("referral_consumer_group_consumers" + group, r.consumers);
            t.family("referral_consumer_group_min_idle_seconds", "gauge",
                     "Since the group's most recently active consumer last read (grows while no worker runs; "
                     "NaN without consumers).");
            t.sample("referral_consumer_group_min_idle_seconds" + group, r.min_idle_s);
        }
    } else {
        log(LogLevel::warn, "metrics: Redis at %s: %s", ctx.config.redis.c_str(), r.error.c_str());
    }

    bool db_up = false;
    DbFigures d;
    try {
        auto store = ctx.pool.take();
        try {
            d = db_figures(*store, now_ms());
            db_up = true;
        } catch (const DbError&) {
            store.broken();
            throw;
        }
    } catch (const DbError& e) {
        log(LogLevel::warn, "metrics: database: %s", e.what());
    }
    t.family("referral_database_up", "gauge", "1 when the main database answered this scrape, 0 when it did not.");
    t.sample("referral_database_up", db_up ? 1 : 0);
    if (db_up) {
        t.family("referral_rewards", "gauge", "Rewards by lifecycle status.");
        for (const auto& kv : d.rewards) t.sample("referral_rewards{status=\"" + label(kv.first) + "\"}", kv.second);
        t.family("referral_deliveries", "gauge", "Deliveries to Stripe and webhooks by state (queued, dead).");
        t.sample("referral_deliveries{state=\"queued\"}", static_cast<double>(d.deliveries_queued));
        t.sample("referral_deliveries{state=\"dead\"}", static_cast<double>(d.deliveries_dead));
        t.family("referral_delivery_oldest_queued_age_seconds", "gauge",
                 "Age of the oldest queued delivery (0 when none is queued).");
        t.sample("referral_delivery_oldest_queued_age_seconds", d.oldest_queued_age_s);
    }
    res.status = 200;
    res.set_content(t.str(), "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace referral::ctl
