#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "worker/util.h"

namespace referral::worker {

volatile std::sig_atomic_t g_stop = 0;

namespace {

void on_signal(int) {
    if (g_stop) {
        static const char msg[] = "referral-worker: second stop signal, exiting at once\n";
        ssize_t n = write(2, msg, sizeof(msg) - 1);
        (void)n;
        _exit(1);
    }
    g_stop = 1;
}

constexpr int kBlockMs = 1000;      // XREADGROUP BLOCK: a stop is noticed within a second
constexpr int kMaxBackoffMs = 10000;

}  // namespace

void install_signal_handlers() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

Worker::Worker(WorkerOptions opts)
    : o_(std::move(opts)),
      dead_stream_(o_.config.stream + ":dead"),
      redis_(o_.redis, kBlockMs + 10000),
      processor_(o_.config.rules, o_.config.window_ms) {}

bool Worker::sleep_backoff(int* backoff_ms) {
    int jitter = *backoff_ms / 5 > 0 ? static_cast<int>(now_ms() % (*backoff_ms / 5 + 1)) : 0;
    int total = *backoff_ms + jitter;
    for (int slept = 0; slept < total; slept += 50) {
        if (g_stop) return false;
        usleep(50 * 1000);
    }
    *backoff_ms = std::min(kMaxBackoffMs, *backoff_ms * 3 / 2 + 100);
    return !g_stop;
}

bool Worker::connect_redis() {
    int backoff = 200;
    while (!redis_.connected()) {
        try {
            redis_.connect();
            log(LogLevel::info, "connected to Redis %s", describe(o_.redis).c_str());
        } catch (const RedisError& e) {
            log(LogLevel::warn, "%s; retrying in %.1fs", e.what(), backoff / 1000.0);
            if (!sleep_backoff(&backoff)) return false;
        }
    }
    return true;
}

bool Worker::ensure_group() {
    int backoff = 200;
    for (;;) {
        if (!connect_redis()) return false;
        try {
            redis_.command({"XGROUP", "CREATE", o_.config.stream, o_.config.group, "0", "MKSTREAM"});
            log(LogLevel::info, "created consumer group %s on %s", o_.config.group.c_str(),
                o_.config.stream.c_str());
            return true;
        } catch (const RedisError& e) {
            if (e.is_reply && std::strncmp(e.what(), "BUSYGROUP", 9) == 0) return true;
            log(LogLevel::warn, "cannot create the consumer group: %s; retrying", e.what());
            if (e.is_reply) redis_.close();
            if (!sleep_backoff(&backoff)) return false;
        }
    }
}

bool Worker::open_store(bool at_start, int* fatal) {
    int backoff = 200;
    while (!store_) {
        try {
            auto s = worker::open_store(o_.database, false);
            s->require_current_schema();
            store_ = std::move(s);
            log(LogLevel::info, "using database %s", describe(o_.database).c_str());
        } catch (const DbError& e) {
            if (!e.transient && at_start) {
                log(LogLevel::error, "%s", e.what());
                *fatal = 2;
                return false;
            }
            log(LogLevel::warn, "database unavailable: %s; retrying in %.1fs", e.what(), backoff / 1000.0);
            if (!sleep_backoff(&backoff)) return false;
        }
    }
    return true;
}

void Worker::report(bool force) {
    std::int64_t now = now_ms();
    if (!force && now - last_report_ms_ < 10000) return;
    bool unchanged = total_.events == reported_.events && total_.dead == reported_.dead;
    if (unchanged && (!force || last_report_ms_ != 0)) return;
    last_report_ms_ = now;
    reported_ = total_;
    log(LogLevel::info, "totals: %s", total_.describe().c_str());
}

int Worker::run() {
    log(LogLevel::info,
        "starting: stream %s, group %s, consumer %s, batch %d, claim idle %llds, %zu reward rule(s)%s",
        o_.config.stream.c_str(), o_.config.group.c_str(), o_.consumer.c_str(), o_.config.batch,
        static_cast<long long>(o_.config.claim_idle_ms / 1000), o_.config.rules.size(),
        o_.once ? ", --once" : "");
    int fatal = 0;
    if (!open_store(true, &fatal)) {
        if (fatal) return fatal;
        log(LogLevel::info, "stopped before the database was reachable");
        return 0;
    }
    if (!ensure_group()) return 0;

    const std::string count = std::to_string(o_.config.batch);
    const std::string block = std::to_string(kBlockMs);
    const std::string min_idle = std::to_string(o_.config.claim_idle_ms);
    const std::int64_t claim_every_ms =
        std::max<std::int64_t>(1000, std::min<std::int64_t>(o_.config.claim_idle_ms / 2, 30000));
    Phase phase = Phase::pending;
    std::string pending_after = "0";  // own pending entries first (a restart)
    std::string claim_cursor = "0-0";
    std::int64_t next_claim_ms = 0;   // claim right after the pending phase
    int backoff = 200;

    bool group_ready = true;
    while (!g_stop) {
        if (!redis_.connected() && !connect_redis()) break;
        if (!group_ready) {
            if (!ensure_group()) break;
            group_ready = true;
        }
        Reply reply;
        std::vector<Entry> entries;
        try {
            if (phase == Phase::pending) {
                reply = redis_.command({"XREADGROUP", "GROUP", o_.config.group, o_.consumer, "COUNT", count,
                                        "STREAMS", o_.config.stream, pending_after});
                entries = stream_entries(reply.get());
                if (entries.empty()) {
                    phase = Phase::claim;
                    claim_cursor = "0-0";
                    continue;
                }
                pending_after = std::string(entries.back().id);
            } else if (phase == Phase::claim) {
                reply = redis_.command({"XAUTOCLAIM", o_.config.stream, o_.config.group, o_.consumer,
                                        min_idle, claim_cursor, "COUNT", count});
                if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
                    claim_cursor = reply->element[0]->type == REDIS_REPLY_STRING
                                       ? std::string(reply->element[0]->str, reply->element[0]->len)
                                       : "0-0";
                    entries = entry_array(reply->element[1]);
                } else {
                    claim_cursor = "0-0";
                }
                if (!entries.empty())
                    log(LogLevel::info, "reclaimed %zu entries idle for more than %llds", entries.size(),
                        static_cast<long long>(o_.config.claim_idle_ms / 1000));
                if (claim_cursor == "0-0") {
                    phase = Phase::fresh;
                    next_claim_ms = now_ms() + claim_every_ms;
                }
                if (entries.empty()) continue;
            } else {
                if (o_.once) {
                    reply = redis_.command({"XREADGROUP", "GROUP", o_.config.group, o_.consumer, "COUNT",
                                            count, "STREAMS", o_.config.stream, ">"});
                } else {
                    reply = redis_.command({"XREADGROUP", "GROUP", o_.config.group, o_.consumer, "COUNT",
                                            count, "BLOCK", block, "STREAMS", o_.config.stream, ">"});
                }
                entries = stream_entries(reply.get());
                if (!o_.once && now_ms() >= next_claim_ms) {
                    phase = Phase::claim;
                    claim_cursor = "0-0";
                }
                if (entries.empty()) {
                    report(false);
                    if (o_.once) break;  // drained
                    continue;
                }
            }
            backoff = 200;
        } catch (const RedisError& e) {
            if (e.is_reply && std::strncmp(e.what(), "NOGROUP", 7) == 0) {
                log(LogLevel::warn, "the consumer group is gone (%s); creating it again", e.what());
                group_ready = false;
                continue;
            }
            log(LogLevel::warn, "reading the stream failed: %s; retrying in %.1fs", e.what(), backoff / 1000.0);
            if (e.is_reply) redis_.close();
            if (!sleep_backoff(&backoff)) break;
            continue;
        }
        if (!handle(entries)) break;  // stopping before the batch could be applied
        report(false);
    }
    report(true);
    log(LogLevel::info, "stopped");
    return 0;
}

bool Worker::handle(const std::vector<Entry>& entries) {
    std::vector<Event> events;
    std::vector<std::size_t> index;  // events[i] comes from entries[index[i]]
    std::vector<std::pair<std::size_t, std::string>> dead;
    events.reserve(entries.size());
    index.reserve(entries.size());
    for (std::size_t i = 0; i < entries.size(); i++) {
        if (entries[i].deleted) continue;  // nothing left to apply: just acknowledge
        events.emplace_back();
        std::string reason = parse_event(entries[i].fields, &events.back());
        if (!reason.empty()) {
            events.pop_back();
            dead.emplace_back(i, std::move(reason));
            continue;
        }
        index.push_back(i);
    }
    Counters counters;
    if (!events.empty() && !apply(events, index, entries, &dead, &counters)) return false;
    std::sort(dead.begin(), dead.end());
    if (!finish(entries, dead)) return false;
    counters.dead = static_cast<std::int64_t>(dead.size());
    total_.add(counters);
    log(LogLevel::debug, "batch of %zu applied: %s", entries.size(), counters.describe().c_str());
    return true;
}

bool Worker::apply(const std::vector<Event>& events, const std::vector<std::size_t>& index,
                   const std::vector<Entry>& entries,
                   std::vector<std::pair<std::size_t, std::string>>* dead, Counters* counters) {
    (void)entries;
    int backoff = 200;
    for (;;) {
        int fatal = 0;
        if (!open_store(false, &fatal)) return false;
        Counters c;
        try {
            store_->begin();
            for (const Event& ev : events) processor_.apply(*store_, ev, &c);
            processor_.flush(*store_, &c);
            store_->commit();
            counters->add(c);
            return true;
        } catch (const DbError& e) {
            store_->rollback();
            processor_.forget();
            if (e.transient) {
                log(LogLevel::warn, "database error, the batch is retried: %s", e.what());
                store_.reset();
                if (!sleep_backoff(&backoff)) return false;
                continue;
            }
            log(LogLevel::warn, "the batch cannot be applied (%s): applying its events one by one", e.what());
        } catch (const std::exception& e) {
            store_->rollback();
            processor_.forget();
            log(LogLevel::warn, "error while applying a batch, retrying: %s", e.what());
            store_.reset();
            if (!sleep_backoff(&backoff)) return false;
            continue;
        }
        // One event per transaction: the event that fails for good goes to
        // the dead stream, the others are applied (idempotently, so the
        // whole batch may be run again after a transient error).
        Counters each_total;
        bool transient = false;
        std::vector<std::pair<std::size_t, std::string>> failed;
        for (std::size_t i = 0; i < events.size() && !transient; i++) {
            Counters one;
            try {
                store_->begin();
                processor_.apply(*store_, events[i], &one);
                processor_.flush(*store_, &one);
                store_->commit();
                each_total.add(one);
            } catch (const DbError& e) {
                store_->rollback();
                processor_.forget();
                if (e.transient) {
                    log(LogLevel::warn, "database error, the batch is retried: %s", e.what());
                    transient = true;
                } else {
                    failed.emplace_back(index[i], std::string("cannot be applied: ") + e.what());
                }
            }
        }
        if (transient) {
            store_.reset();
            if (!sleep_backoff(&backoff)) return false;
            continue;
        }
        counters->add(each_total);
        for (auto& f : failed) dead->push_back(std::move(f));
        return true;
    }
}

bool Worker::finish(const std::vector<Entry>& entries,
                    const std::vector<std::pair<std::size_t, std::string>>& dead) {
    std::size_t dead_sent = 0;
    int backoff = 200;
    int attempts_while_stopping = 0;
    for (;;) {
        try {
            if (!redis_.connected()) redis_.connect();
            for (; dead_sent < dead.size(); dead_sent++) {
                const Entry& e = entries[dead[dead_sent].first];
                std::vector<std::string_view> args = {"XADD", dead_stream_, "*", "reason",
                                                      dead[dead_sent].second, "entry", e.id};
                for (const Field& f : e.fields) {
                    args.push_back(f.name);
                    args.push_back(f.value);
                }
                redis_.command(args);
                log(LogLevel::warn, "entry %.*s sent to %s: %s", static_cast<int>(e.id.size()), e.id.data(),
                    dead_stream_.c_str(), dead[dead_sent].second.c_str());
            }
            std::vector<std::string_view> ack = {"XACK", o_.config.stream, o_.config.group};
            for (const Entry& e : entries) ack.push_back(e.id);
            redis_.command(ack);
            return true;
        } catch (const RedisError& e) {
            if (e.is_reply) redis_.close();
            if (g_stop && ++attempts_while_stopping > 5) {
                log(LogLevel::warn,
                    "stopping with %zu entries applied but not acknowledged (%s): they will be delivered "
                    "again and change nothing",
                    entries.size(), e.what());
                return false;
            }
            log(LogLevel::warn, "acknowledging the batch failed: %s; retrying in %.1fs", e.what(),
                backoff / 1000.0);
            int b = backoff;
            if (g_stop) {
                usleep(static_cast<useconds_t>(std::min(b, 1000)) * 1000);
                backoff = std::min(kMaxBackoffMs, backoff * 3 / 2 + 100);
            } else if (!sleep_backoff(&backoff)) {
                continue;
            }
        }
    }
}

}  // namespace referral::worker
