#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "worker/delivery.h"
#include "worker/retain.h"
#include "worker/util.h"

namespace referral::worker {

std::atomic<int> g_stop{0};

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

constexpr int kBlockMs = 1000;  // XREADGROUP BLOCK: a stop is noticed within a second
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

// ---------------------------------------------------------------- queue

bool BatchQueue::push(std::unique_ptr<Batch> b) {
    std::vector<std::unique_ptr<Batch>> spent;
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return closed_ || q_.size() < capacity_; });
    if (closed_) return false;
    q_.push_back(std::move(b));
    spent.swap(spent_);
    cv_.notify_all();
    lock.unlock();
    return true;  // `spent` is freed here, on the reader's thread
}

std::unique_ptr<Batch> BatchQueue::pop() {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return closed_ || !q_.empty(); });
    if (q_.empty()) return nullptr;
    auto b = std::move(q_.front());
    q_.pop_front();
    in_flight_++;
    cv_.notify_all();
    return b;
}

void BatchQueue::done(std::unique_ptr<Batch> b) {
    std::lock_guard<std::mutex> lock(m_);
    in_flight_--;
    spent_.push_back(std::move(b));
    cv_.notify_all();
}

bool BatchQueue::wait_idle() {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return closed_ || (q_.empty() && in_flight_ == 0); });
    return !closed_;
}

void BatchQueue::close() {
    std::lock_guard<std::mutex> lock(m_);
    closed_ = true;
    cv_.notify_all();
}

// --------------------------------------------------------------- worker

Worker::Worker(WorkerOptions opts)
    : o_(std::move(opts)),
      dead_stream_(o_.config.stream + ":dead"),
      reader_(o_.redis, kBlockMs + 10000, true),
      acker_(o_.redis, 10000),
      processor_(o_.config),
      queue_(2),
      count_arg_(std::to_string(o_.config.batch)),
      block_arg_(std::to_string(kBlockMs)) {}

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

void Worker::report(bool force) {
    std::int64_t now = now_ms();
    if (!force && now - last_report_ms_ < 10000) return;
    bool unchanged = total_.events == reported_.events && total_.dead == reported_.dead &&
                     total_.trimmed == reported_.trimmed;
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

    std::thread reader([this] { read_loop(); });
    // The second path: rewards past their hold, Stripe, webhooks. Not in
    // --once, which only drains the stream.
    std::unique_ptr<DeliveryLoop> delivery;
    std::thread delivery_thread;
    if (!o_.once) {
        delivery = std::make_unique<DeliveryLoop>(o_.config, o_.database, o_.consumer);
        delivery_thread = std::thread([&] { delivery->run(); });
    }
    int status = 0;
    try {
        while (auto b = queue_.pop()) {
            Counters counters;
            if (!apply(*b, &counters) || !finish(*b)) {
                // Stopping while the database or Redis is away: what was read
                // stays pending and is delivered again later.
                queue_.close();
                break;
            }
            counters.dead = static_cast<std::int64_t>(b->dead.size());
            counters.trimmed = b->trimmed;
            if (b->trimmed > 0)
                log(LogLevel::warn,
                    "%lld pending entries were trimmed from the stream before they were applied: "
                    "acknowledged, their events are lost",
                    static_cast<long long>(b->trimmed));
            total_.add(counters);
            log(LogLevel::debug, "batch of %zu applied: %s", b->entries.size(), counters.describe().c_str());
            queue_.done(std::move(b));
            report(false);
        }
    } catch (const std::exception& e) {
        // Never std::terminate with the reader running: stop it, exit 1;
        // what was read and not acknowledged is delivered again later.
        log(LogLevel::error, "unexpected error, stopping: %s", e.what());
        status = 1;
        g_stop = 1;
        queue_.close();
    }
    reader.join();
    if (delivery_thread.joinable()) {
        g_stop = 1;  // the consumer stopped: so does delivery (a round in flight finishes its request)
        delivery_thread.join();
        const DeliveryTotals& t = delivery->totals();
        log(LogLevel::info,
            "delivery totals: promoted=%lld, delivered=%lld, retried=%lld, dead=%lld, requests=%lld, retained=%lld",
            static_cast<long long>(t.promoted), static_cast<long long>(t.delivered),
            static_cast<long long>(t.retried), static_cast<long long>(t.dead), static_cast<long long>(t.requests),
            static_cast<long long>(t.retained));
    }
    if (reader_failed_) status = 1;
    if (status == 0) forget_consumer();
    report(true);
    log(LogLevel::info, "stopped");
    return status;
}

// A default consumer name is new with every process: once it has nothing
// pending, remove it from the group so that dead names do not pile up.
void Worker::forget_consumer() {
    if (!o_.consumer_is_default) return;
    try {
        if (!acker_.connected()) acker_.connect();
        Reply r = acker_.command({"XPENDING", o_.config.stream, o_.config.group, "-", "+", "1", o_.consumer});
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 0)
            acker_.command({"XGROUP", "DELCONSUMER", o_.config.stream, o_.config.group, o_.consumer});
    } catch (const RedisError&) {
        // not important: the name just stays in XINFO CONSUMERS
    }
}

// ---------------------------------------------------------- reader side

bool Worker::connect_reader(int* backoff) {
    while (!reader_.connected()) {
        try {
            reader_.connect();
            log(LogLevel::info, "connected to Redis %s", describe(o_.redis).c_str());
            if (reader_connections_++ > 0) reconnected_ = true;
        } catch (const RedisError& e) {
            log(LogLevel::warn, "%s; retrying in %.1fs", e.what(), *backoff / 1000.0);
            if (!sleep_backoff(backoff)) return false;
        }
    }
    return true;
}

bool Worker::ensure_group() {
    int backoff = 200;
    for (;;) {
        if (!connect_reader(&backoff)) return false;
        try {
            reader_.command({"XGROUP", "CREATE", o_.config.stream, o_.config.group, "0", "MKSTREAM"});
            log(LogLevel::info, "created consumer group %s on %s", o_.config.group.c_str(),
                o_.config.stream.c_str());
            return true;
        } catch (const RedisError& e) {
            if (e.is_reply && std::strncmp(e.what(), "BUSYGROUP", 9) == 0) return true;
            log(LogLevel::warn, "cannot create the consumer group: %s; retrying", e.what());
            if (e.is_reply) reader_.close();
            if (!sleep_backoff(&backoff)) return false;
        }
    }
}

// One read according to the phase: own pending entries first (a restart
// under the same consumer name), then a reclaim sweep (XAUTOCLAIM), then
// new entries; a sweep again every claim_idle/2 (1 to 30 s). Returns an
// empty batch when there was nothing; throws RedisError.
std::unique_ptr<Batch> Worker::read_batch(Phase* phase) {
    auto b = std::make_unique<Batch>();
    if (*phase == Phase::pending) {
        // From the start of our pending list: wait for the batches in
        // flight first, so that none is read twice.
        if (pending_after_ == "0" && !queue_.wait_idle()) return b;
        redisReply* r = reader_.command_into({"XREADGROUP", "GROUP", o_.config.group, o_.consumer, "COUNT",
                                              count_arg_, "STREAMS", o_.config.stream, pending_after_},
                                             &b->arena);
        b->entries = stream_entries(r);
        if (b->entries.empty()) {
            *phase = Phase::claim;
            claim_cursor_ = "0-0";
        } else {
            pending_after_ = std::string(b->entries.back().id);
        }
    } else if (*phase == Phase::claim) {
        if (!queue_.wait_idle()) return b;  // never claim our own entries in flight
        const std::string min_idle = std::to_string(o_.config.claim_idle_ms);
        redisReply* r = reader_.command_into({"XAUTOCLAIM", o_.config.stream, o_.config.group, o_.consumer,
                                              min_idle, claim_cursor_, "COUNT", count_arg_},
                                             &b->arena);
        claim_cursor_ = "0-0";
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
            if (r->element[0]->type == REDIS_REPLY_STRING)
                claim_cursor_.assign(r->element[0]->str, r->element[0]->len);
            b->entries = entry_array(r->element[1]);
            // Redis 7: the ids of pending entries no longer in the stream
            // (trimmed or deleted), which XAUTOCLAIM dropped from the
            // pending list. Acknowledged (a no-op) and counted.
            if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY) {
                const redisReply* gone = r->element[2];
                for (std::size_t i = 0; i < gone->elements; i++) {
                    const redisReply* id = gone->element[i];
                    if (!id || id->type != REDIS_REPLY_STRING || id->len == 0) continue;
                    Entry e;
                    e.id = std::string_view(id->str, id->len);
                    e.deleted = true;
                    b->entries.push_back(std::move(e));
                }
            }
        }
        if (!b->entries.empty())
            log(LogLevel::info, "reclaimed %zu entries pending for more than %llds", b->entries.size(),
                static_cast<long long>(o_.config.claim_idle_ms / 1000));
        if (claim_cursor_ == "0-0") {
            *phase = Phase::fresh;
            const std::int64_t every =
                std::max<std::int64_t>(1000, std::min<std::int64_t>(o_.config.claim_idle_ms / 2, 30000));
            next_claim_ms_ = now_ms() + every;
        }
    } else {
        redisReply* r = nullptr;
        if (prefetched_) {
            prefetched_ = false;
            r = reader_.read_into(&b->arena);
        } else {
            r = reader_.command_into(fresh_read(), &b->arena);
        }
        b->entries = stream_entries(r);
        if (!o_.once && now_ms() >= next_claim_ms_) {
            *phase = Phase::claim;
            claim_cursor_ = "0-0";
        }
    }
    return b;
}

std::vector<std::string_view> Worker::fresh_read() const {
    std::vector<std::string_view> args = {"XREADGROUP", "GROUP", o_.config.group, o_.consumer, "COUNT", count_arg_};
    if (!o_.once) {
        args.push_back("BLOCK");
        args.push_back(block_arg_);
    }
    args.push_back("STREAMS");
    args.push_back(o_.config.stream);
    args.push_back(">");
    return args;
}

// Parsed on the reader thread, off the database thread.
void Worker::parse_batch(Batch* b) {
    b->events.reserve(b->entries.size());
    b->index.reserve(b->entries.size());
    for (std::size_t i = 0; i < b->entries.size(); i++) {
        if (b->entries[i].deleted) {  // nothing left to apply: acknowledged, counted, logged
            b->trimmed++;
            continue;
        }
        b->events.emplace_back();
        std::string reason = parse_event(b->entries[i].fields, &b->events.back());
        if (!reason.empty()) {
            b->events.pop_back();
            b->dead.emplace_back(i, std::move(reason));
            continue;
        }
        b->index.push_back(i);
    }
}

void Worker::read_loop() {
    try {
        read_loop_inner();
    } catch (const std::exception& e) {
        log(LogLevel::error, "unexpected error reading the stream, stopping: %s", e.what());
        reader_failed_ = true;
        g_stop = 1;
    }
    queue_.close();
}

bool Worker::own_pending() {
    Reply r = reader_.command({"XPENDING", o_.config.stream, o_.config.group, "-", "+", "1", o_.consumer});
    return r->type == REDIS_REPLY_ARRAY && r->elements > 0;
}

void Worker::trim_stream() {
    if (o_.config.retain_ms <= 0) return;
    next_trim_ms_ = now_ms() + std::min<std::int64_t>(60000, o_.config.retain_ms / 2);
    try {
        Reply info = reader_.command({"XINFO", "GROUPS", o_.config.stream});
        std::vector<GroupFloor> groups;
        for (std::size_t i = 0; info->type == REDIS_REPLY_ARRAY && i < info->elements; i++) {
            const redisReply* g = info->element[i];
            std::string name, last;
            long long pending = 0;
            for (std::size_t k = 0; g->type == REDIS_REPLY_ARRAY && k + 1 < g->elements; k += 2) {
                std::string_view key(g->element[k]->str ? g->element[k]->str : "", g->element[k]->len);
                const redisReply* v = g->element[k + 1];
                if (key == "name" && v->type == REDIS_REPLY_STRING) name.assign(v->str, v->len);
                if (key == "last-delivered-id" && v->type == REDIS_REPLY_STRING) last.assign(v->str, v->len);
                if (key == "pending" && v->type == REDIS_REPLY_INTEGER) pending = v->integer;
            }
            groups.push_back(GroupFloor{"", last});
            if (pending > 0) {
                Reply p = reader_.command({"XPENDING", o_.config.stream, name, "-", "+", "1"});
                if (p->type == REDIS_REPLY_ARRAY && p->elements > 0 && p->element[0]->type == REDIS_REPLY_ARRAY &&
                    p->element[0]->elements > 0 && p->element[0]->element[0]->type == REDIS_REPLY_STRING)
                    groups.back().oldest_pending.assign(p->element[0]->element[0]->str,
                                                        p->element[0]->element[0]->len);
                else
                    return;  // cannot tell what it needs: trim nothing
            }
        }
        auto point = trim_point(groups, now_ms() - o_.config.retain_ms);
        if (!point) return;
        const std::string minid = to_string(*point);
        Reply r = reader_.command({"XTRIM", o_.config.stream, "MINID", "=", minid});
        if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
            log(LogLevel::info, "retain: trimmed %lld stream entries before %s", r->integer, minid.c_str());
    } catch (const RedisError& e) {
        log(LogLevel::warn, "retain: trimming the stream failed: %s", e.what());
        if (e.is_reply) reader_.close();
    }
}

void Worker::read_loop_inner() {
    Phase phase = Phase::pending;
    int backoff = 200;
    while (!g_stop) {
        if (!reader_.connected() && !connect_reader(&backoff)) break;
        if (!group_ready_) {
            if (!ensure_group()) break;
            group_ready_ = true;
        }
        if (reconnected_) {
            // A reply lost with the connection may have delivered entries
            // to us that we never saw: read our own pending list again.
            reconnected_ = false;
            phase = Phase::pending;
            pending_after_ = "0";
        }
        const bool trim_due = o_.config.retain_ms > 0 && now_ms() >= next_trim_ms_ && !o_.once;
        if (trim_due && !prefetched_) trim_stream();
        std::unique_ptr<Batch> b;
        Phase before = phase;
        try {
            b = read_batch(&phase);
            backoff = 200;
            // A full batch of new entries: more are likely. Ask for them now
            // so that Redis builds that reply while this one is parsed.
            if (before == Phase::fresh && phase == Phase::fresh && !g_stop && !trim_due &&
                b->entries.size() == static_cast<std::size_t>(o_.config.batch)) {
                reader_.send_now(fresh_read());
                prefetched_ = true;
            }
        } catch (const RedisError& e) {
            if (prefetched_) {
                // A reply is still on its way: start over on a new
                // connection (our pending list is read again).
                prefetched_ = false;
                reader_.close();
            }
            if (e.is_reply && std::strncmp(e.what(), "NOGROUP", 7) == 0) {
                log(LogLevel::warn, "the consumer group is gone (%s); creating it again", e.what());
                group_ready_ = false;
                continue;
            }
            log(LogLevel::warn, "reading the stream failed: %s; retrying in %.1fs", e.what(), backoff / 1000.0);
            if (e.is_reply) reader_.close();
            if (!sleep_backoff(&backoff)) break;
            continue;
        }
        if (b->entries.empty()) {
            if (o_.once && before == Phase::fresh) {
                // Drained, once what is in flight is acknowledged and
                // nothing is left pending under our name (a lost reply).
                if (!queue_.wait_idle()) break;
                try {
                    if (!own_pending()) {
                        trim_stream();  // --once: drained and acknowledged, trim once
                        break;
                    }
                } catch (const RedisError& e) {
                    log(LogLevel::warn, "checking our pending entries failed: %s; retrying", e.what());
                    if (e.is_reply) reader_.close();
                    if (!sleep_backoff(&backoff)) break;
                    continue;
                }
                log(LogLevel::info, "entries delivered to us are still pending: reading them again");
                phase = Phase::pending;
                pending_after_ = "0";
            }
            continue;
        }
        parse_batch(b.get());
        if (!queue_.push(std::move(b))) break;
    }
    if (prefetched_ && !reader_failed_) {
        // Stopping with a read out: its entries were delivered to us, so
        // apply them rather than leave them pending under a name that goes.
        try {
            Phase fresh = Phase::fresh;
            std::unique_ptr<Batch> b = read_batch(&fresh);
            if (!b->entries.empty()) {
                parse_batch(b.get());
                queue_.push(std::move(b));
            }
        } catch (const RedisError& e) {
            log(LogLevel::warn, "reading the last batch failed: %s; it stays pending", e.what());
        }
        prefetched_ = false;
    }
}

// ------------------------------------------------------------ main side

bool Worker::open_store(bool at_start, int* fatal) {
    int backoff = 200;
    while (!store_) {
        try {
            auto s = worker::open_store(o_.database, false);
            s->require_current_schema();
            s->background_checkpoints();
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

bool Worker::apply(Batch& b, Counters* counters) {
    if (b.events.empty()) return true;
    int backoff = 200;
    for (;;) {
        int fatal = 0;
        if (!open_store(false, &fatal)) return false;
        Counters c;
        try {
            store_->begin();
            processor_.start_batch();
            for (const Event& ev : b.events) processor_.apply(*store_, ev, &c);
            processor_.flush(*store_, &c);
            Processor::persist(*store_, c);
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
            // Not a database error: perhaps one event the code cannot cope
            // with. Find it rather than retry the batch for ever.
            store_->rollback();
            processor_.forget();
            log(LogLevel::warn, "error while applying a batch (%s): applying its events one by one", e.what());
        }
        // One event per transaction: an event that fails for good goes to
        // the dead stream, the others are applied (idempotently, so the
        // whole batch may run again after a transient error).
        Counters each_total;
        bool transient = false;
        std::vector<std::pair<std::size_t, std::string>> failed;
        for (std::size_t i = 0; i < b.events.size() && !transient; i++) {
            Counters one;
            try {
                store_->begin();
                processor_.apply(*store_, b.events[i], &one);
                processor_.flush(*store_, &one);
                Processor::persist(*store_, one);
                store_->commit();
                each_total.add(one);
            } catch (const DbError& e) {
                store_->rollback();
                processor_.forget();
                if (e.transient) {
                    log(LogLevel::warn, "database error, the batch is retried: %s", e.what());
                    transient = true;
                } else {
                    failed.emplace_back(b.index[i], std::string("cannot be applied: ") + e.what());
                }
            } catch (const std::exception& e) {
                // One bad event must not stop every worker: it alone goes
                // to the dead stream with the reason.
                store_->rollback();
                processor_.forget();
                failed.emplace_back(b.index[i], std::string("cannot be applied: ") + e.what());
            }
        }
        if (transient) {
            store_.reset();
            if (!sleep_backoff(&backoff)) return false;
            continue;
        }
        counters->add(each_total);
        for (auto& f : failed) b.dead.push_back(std::move(f));
        std::sort(b.dead.begin(), b.dead.end());
        return true;
    }
}

bool Worker::finish(const Batch& b) {
    std::size_t dead_sent = 0;
    int backoff = 200;
    int attempts_while_stopping = 0;
    for (;;) {
        try {
            if (!acker_.connected()) acker_.connect();
            for (; dead_sent < b.dead.size(); dead_sent++) {
                const Entry& e = b.entries[b.dead[dead_sent].first];
                std::vector<std::string_view> args = {"XADD", dead_stream_, "*", "reason",
                                                      b.dead[dead_sent].second, "entry", e.id};
                for (const Field& f : e.fields) {
                    args.push_back(f.name);
                    args.push_back(f.value);
                }
                acker_.command(args);
                log(LogLevel::warn, "entry %.*s sent to %s: %s", static_cast<int>(e.id.size()), e.id.data(),
                    dead_stream_.c_str(), b.dead[dead_sent].second.c_str());
            }
            std::vector<std::string_view> ack = {"XACK", o_.config.stream, o_.config.group};
            ack.reserve(b.entries.size() + 3);
            for (const Entry& e : b.entries) ack.push_back(e.id);
            acker_.command(ack);
            return true;
        } catch (const RedisError& e) {
            if (e.is_reply) acker_.close();
            if (g_stop && ++attempts_while_stopping > 5) {
                log(LogLevel::warn,
                    "stopping with %zu entries applied but not acknowledged (%s): they will be delivered "
                    "again and change nothing",
                    b.entries.size(), e.what());
                return false;
            }
            log(LogLevel::warn, "acknowledging the batch failed: %s; retrying in %.1fs", e.what(),
                backoff / 1000.0);
            if (g_stop) {
                usleep(static_cast<useconds_t>(std::min(backoff, 1000)) * 1000);
                backoff = std::min(kMaxBackoffMs, backoff * 3 / 2 + 100);
            } else {
                sleep_backoff(&backoff);
            }
        }
    }
}

}  // namespace referral::worker
