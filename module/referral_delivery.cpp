// The per-worker path of events to Redis: an in-memory outbox, one lazily
// opened hiredis connection with pipelined XADDs, reconnects with backoff,
// and the spool for outages, full buffers and exits.
//
// An event leaves the outbox only when Redis has acknowledged its XADD.
// With a spool, every event in the outbox that is not already on disk (a
// replayed one) is also in this worker's journal (core/journal.h), so a
// worker killed with SIGKILL loses nothing: another worker finds the
// journal unlocked and replays it.
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/delivery.h"
#include "core/journal.h"
#include "core/outbox.h"
#include "core/spool.h"
#include "referral_module.h"
#include "referral_redis_adapter.h"

namespace referral_ngx {
namespace {

constexpr ngx_msec_t kTickMs = 1000;
constexpr ngx_msec_t kExitTickMs = 100;
constexpr ngx_msec_t kSentinelTimeoutMs = 1000;
using referral::Link;

class Delivery {
public:
    Delivery(ngx_cycle_t* cycle, MainConf* mcf)
        : mcf_(mcf), log_(cycle->log), outbox_(mcf->buffer) {
        if (mcf->spool.len > 0) {
            std::string dir(reinterpret_cast<char*>(mcf->spool.data), mcf->spool.len);
            spool_ = std::make_unique<referral::Spool>(dir, mcf->buffer / 4, mcf->spool_max);
            // Segments of a quarter of the buffer: the journal holds what
            // the buffer does, in a few files a replay reads at once.
            journal_ = std::make_unique<referral::Journal>(dir, mcf->buffer / 4);
        }
        init_timer(&tick_ev_, on_tick);
        init_timer(&reconnect_ev_, on_reconnect);
        init_timer(&wait_ev_, on_wait_posted);
        init_timer(&sentinel_ev_, on_sentinel_timeout);
        sentinel_ev_.cancelable = 1;
        reconnect_ev_.cancelable = 1;
        tick_ev_.cancelable = 1;
    }

    void start() {
        if (spool_) {
            recover_orphans();
            if (spool_->sealed_count() > 0) {
                backlog_ = true;
                connect();
            }
        }
        ngx_add_timer(&tick_ev_, kTickMs);
    }

    void push(const char* cmd, size_t len) {
        const std::int64_t now = now_ms();
        const bool has_spool = spool_ != nullptr;
        referral::Route route = referral::route_event(has_spool, state_, backlog_, outbox_.fits(len), false);
        if (route == referral::Route::spool) {
            if (to_spool(std::string_view(cmd, len), now, true)) return;
            route = referral::route_event(has_spool, state_, backlog_, outbox_.fits(len), true);
        }
        if (route == referral::Route::drop) {
            drop(1, spool_ && spool_->full() ? "the buffer is full and the spool is at max_size"
                                             : "the buffer is full and no spool is available");
            return;
        }
        outbox_.push(std::string(cmd, len), 0, now, journal(std::string_view(cmd, len)));
        count(&Counters::buffered);
        if (ac_ != nullptr) {
            send_unsent();
        } else if (state_ == Link::idle) {
            connect();
        }
        hold();
    }

    // Worker exit: whatever is still unacknowledged goes to the spool.
    void shutdown() {
        final_ = true;
        if (sac_ != nullptr) {
            redisAsyncContext* sac = sac_;
            sac_ = nullptr;
            redisAsyncFree(sac);
        }
        if (sentinel_ev_.timer_set) ngx_del_timer(&sentinel_ev_);
        if (ac_ != nullptr) {
            redisAsyncContext* ac = ac_;
            ac_ = nullptr;
            generation_++;
            redisAsyncFree(ac);
        }
        outbox_.requeue();
        spool_all("the worker is exiting");
        drop_all("the worker exited while Redis was unreachable and no spool is set");
        journal_.reset();  // deletes it, unless some event could not be spooled
        if (spool_) {
            std::string err;
            if (!spool_->seal(&err)) spool_error(err);
        }
        if (tick_ev_.timer_set) ngx_del_timer(&tick_ev_);
        if (reconnect_ev_.timer_set) ngx_del_timer(&reconnect_ev_);
        // A multi-statement macro: braces matter.
        if (wait_ev_.posted) {
            ngx_delete_posted_event(&wait_ev_);
        }
    }

private:
    struct Claim {
        std::string name;
        size_t remaining;
    };

    // The state is also published to this worker's status slot.
    void set_state(Link s) {
        state_ = s;
        switch (s) {
            case Link::ready: publish_redis_state(referral::RedisState::connected); break;
            case Link::connecting: publish_redis_state(referral::RedisState::connecting); break;
            case Link::idle: publish_redis_state(referral::RedisState::idle); break;
            default: publish_redis_state(referral::RedisState::disconnected); break;
        }
    }

    static Delivery* from(const redisAsyncContext* ac) {
        return static_cast<Delivery*>(ac->data);
    }

    void init_timer(ngx_event_t* ev, ngx_event_handler_pt handler) {
        ngx_memzero(ev, sizeof(ngx_event_t));
        ev->handler = handler;
        ev->data = this;
        ev->log = log_;
    }

    void* gen_tag() const { return reinterpret_cast<void*>(static_cast<uintptr_t>(generation_)); }

    // ---------------------------------------------------------- connection

    void connect() {
        if (ac_ != nullptr || sac_ != nullptr || final_) return;
        if (mcf_->sentinels != nullptr) {
            ask_sentinel(0);  // then connect_to() the primary it names
            return;
        }
        connect_to(mcf_->redis_unix.len > 0 ? nullptr : reinterpret_cast<const char*>(mcf_->redis_host.data),
                   static_cast<int>(mcf_->redis_port));
    }

    // `host` null: the unix socket.
    void connect_to(const char* host, int port) {
        redisAsyncContext* ac = nullptr;
        if (host == nullptr) {
            ac = redisAsyncConnectUnix(reinterpret_cast<const char*>(mcf_->redis_unix.data));
        } else {
            ac = redisAsyncConnect(host, port);
        }
        if (ac == nullptr || ac->err) {
            const char* why = ac ? ac->errstr : "out of memory";
            failed(why);
            if (ac) redisAsyncFree(ac);
            return;
        }
        if (!redis_attach(ac, log_)) {
            redisAsyncFree(ac);
            failed("no free nginx connection");
            return;
        }
        redis_use_typed_replies(ac);  // the callbacks below read no reply text
        ac->data = this;
        ac_ = ac;
        generation_++;
        set_state(Link::connecting);
        connect_started_ = now_ms();
        redisAsyncSetConnectCallback(ac, on_connect);
        redisAsyncSetDisconnectCallback(ac, on_disconnect);
        if (mcf_->redis_password.len > 0) {
            redisAsyncCommand(ac, on_setup, gen_tag(), "AUTH %b", mcf_->redis_password.data,
                              static_cast<size_t>(mcf_->redis_password.len));
        }
        if (mcf_->redis_db > 0) {
            redisAsyncCommand(ac, on_setup, gen_tag(), "SELECT %d", static_cast<int>(mcf_->redis_db));
        }
        send_unsent();
    }

    // ----------------------------------------------------------- Sentinels

    // Asks Sentinel `i` (of those configured, in order) for the primary,
    // with hiredis's async API in the event loop like the connection itself,
    // under a timer: a Sentinel that does not answer in time, or does not
    // know the primary, passes the question to the next one.
    void ask_sentinel(size_t i) {
        const auto* sentinels = static_cast<const RedisAddr*>(mcf_->sentinels->elts);
        for (; i < mcf_->sentinels->nelts; i++) {
            const RedisAddr& a = sentinels[i];
            redisAsyncContext* sac = redisAsyncConnect(reinterpret_cast<const char*>(a.host.data),
                                                       static_cast<int>(a.port));
            if (sac == nullptr || sac->err) {
                if (sac) redisAsyncFree(sac);
                continue;
            }
            if (!redis_attach(sac, log_)) {
                redisAsyncFree(sac);
                continue;
            }
            sac->data = this;
            sac_ = sac;
            sentinel_i_ = i;
            set_state(Link::connecting);
            connect_started_ = now_ms();
            redisAsyncSetConnectCallback(sac, on_sentinel_connect);
            redisAsyncSetDisconnectCallback(sac, on_sentinel_disconnect);
            redisAsyncCommand(sac, on_sentinel_reply, nullptr, "SENTINEL get-master-addr-by-name %b",
                              mcf_->sentinel_name.data, static_cast<size_t>(mcf_->sentinel_name.len));
            if (sentinel_ev_.timer_set) ngx_del_timer(&sentinel_ev_);
            ngx_add_timer(&sentinel_ev_, kSentinelTimeoutMs);
            return;
        }
        failed("no Sentinel named the primary");
    }

    // This Sentinel is of no help: close it (deferred by hiredis inside its
    // callbacks) and ask the next.
    void next_sentinel(const char* why) {
        if (sac_ == nullptr) return;
        redisAsyncContext* sac = sac_;
        sac_ = nullptr;
        if (sentinel_ev_.timer_set) ngx_del_timer(&sentinel_ev_);
        ngx_log_error(NGX_LOG_INFO, log_, 0, "referral: Sentinel #%uz: %s", sentinel_i_ + 1, why);
        redisAsyncFree(sac);
        if (!final_) ask_sentinel(sentinel_i_ + 1);
    }

    static void on_sentinel_connect(const redisAsyncContext* ac, int status) noexcept {
        Delivery* d = from(ac);
        if (ac != d->sac_ || status == REDIS_OK) return;
        d->guarded("Sentinel", [&] {
            // hiredis frees the context after this callback.
            d->sac_ = nullptr;
            if (d->sentinel_ev_.timer_set) ngx_del_timer(&d->sentinel_ev_);
            if (!d->final_) d->ask_sentinel(d->sentinel_i_ + 1);
        });
    }

    static void on_sentinel_disconnect(const redisAsyncContext* ac, int) noexcept {
        Delivery* d = from(ac);
        if (ac != d->sac_) return;
        d->guarded("Sentinel", [&] {
            d->sac_ = nullptr;  // being freed by hiredis
            if (d->sentinel_ev_.timer_set) ngx_del_timer(&d->sentinel_ev_);
            if (!d->final_) d->ask_sentinel(d->sentinel_i_ + 1);
        });
    }

    static void on_sentinel_reply(redisAsyncContext* ac, void* r, void*) noexcept {
        Delivery* d = from(ac);
        auto* reply = static_cast<redisReply*>(r);
        if (reply == nullptr || ac != d->sac_) return;
        d->guarded("Sentinel", [&] {
            // [host, port]; nil when it does not know the name. Only numeric
            // addresses: a name would need a blocking lookup.
            char host[64] = "";
            int port = 0;
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                reply->element[0]->type == REDIS_REPLY_STRING && reply->element[0]->len < sizeof(host) &&
                reply->element[1]->type == REDIS_REPLY_STRING) {
                ngx_memcpy(host, reply->element[0]->str, reply->element[0]->len);
                host[reply->element[0]->len] = '\0';
                port = ngx_atoi(reinterpret_cast<u_char*>(reply->element[1]->str), reply->element[1]->len);
            }
            unsigned char bin[16];
            const bool numeric = inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
            if (port <= 0 || port > 65535 || !numeric) {
                d->next_sentinel("no primary address for the service");
                return;
            }
            redisAsyncContext* sac = d->sac_;
            d->sac_ = nullptr;
            if (d->sentinel_ev_.timer_set) ngx_del_timer(&d->sentinel_ev_);
            redisAsyncFree(sac);  // deferred: we are in its callback
            ngx_log_error(NGX_LOG_INFO, d->log_, 0, "referral: Sentinel #%uz names %s:%d as the primary",
                          d->sentinel_i_ + 1, host, port);
            d->connect_to(host, port);
        });
    }

    static void on_sentinel_timeout(ngx_event_t* ev) noexcept {
        auto* d = static_cast<Delivery*>(ev->data);
        d->guarded("Sentinel", [&] { d->next_sentinel("no answer in time"); });
    }

    // The connection is gone (or never came): everything in flight is unsent
    // again; with a spool, the outbox moves there so a crash loses nothing.
    void lost(const char* why) {
        ac_ = nullptr;
        generation_++;
        outbox_.requeue();
        waits_inflight_ = 0;
        unwaited_ = false;
        if (final_) return;
        failed(why);
    }

    void failed(const char* why) {
        // One error per outage; the retries that follow are only noted.
        ngx_log_error((outage_ ? NGX_LOG_INFO : NGX_LOG_ERR), log_, 0,
                      "referral: Redis unavailable: %s", why);
        outage_ = true;
        const std::int64_t held = state_ == Link::ready ? now_ms() - connected_at_ : -1;
        const std::int64_t delay = backoff_.after_failure(held, static_cast<std::uint64_t>(ngx_random()));
        set_state(Link::failing);
        if (reconnect_ev_.timer_set) ngx_del_timer(&reconnect_ev_);
        ngx_add_timer(&reconnect_ev_, static_cast<ngx_msec_t>(delay));
        spool_all(nullptr);
        hold();
    }

    // Closes the connection from our side (no reply in time, an error reply).
    void fail_connection(const char* why) {
        if (ac_ == nullptr) return;
        redisAsyncContext* ac = ac_;
        lost(why);
        redisAsyncFree(ac);  // deferred by hiredis when inside its callback
    }

    // Every entry point from hiredis or nginx catches: no exception may
    // unwind into C.
    template <typename F>
    void guarded(const char* what, F&& f) noexcept {
        try {
            f();
        } catch (...) {
            ngx_log_error(NGX_LOG_ALERT, log_, 0, "referral: %s failed: %s", what, exception_message());
        }
    }

    static void on_connect(const redisAsyncContext* ac, int status) noexcept {
        Delivery* d = from(ac);
        if (ac != d->ac_) return;
        d->guarded("connect", [&] {
            if (status != REDIS_OK) {
                d->lost(ac->errstr);  // hiredis frees the context after this
                return;
            }
            ngx_log_error(NGX_LOG_INFO, d->log_, 0, "referral: connected to Redis");
            d->set_state(Link::ready);
            d->connected_at_ = now_ms();
            d->replay();
        });
    }

    static void on_disconnect(const redisAsyncContext* ac, int) noexcept {
        Delivery* d = from(ac);
        if (ac != d->ac_) return;
        d->guarded("disconnect", [&] { d->lost(ac->errstr[0] ? ac->errstr : "connection closed"); });
    }

    static void on_setup(redisAsyncContext* ac, void* r, void* tag) noexcept {
        Delivery* d = from(ac);
        auto* reply = static_cast<redisReply*>(r);
        if (reply == nullptr || tag != d->gen_tag()) return;
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, d->log_, 0, "referral: Redis refused AUTH or SELECT: %*s",
                          ngx_min(reply->len, static_cast<size_t>(200)), reply->str);
            d->guarded("AUTH", [&] { d->fail_connection("AUTH or SELECT refused"); });
        }
    }

    static void on_reply(redisAsyncContext* ac, void* r, void* tag) noexcept {
        Delivery* d = from(ac);
        auto* reply = static_cast<redisReply*>(r);
        if (reply == nullptr || tag != d->gen_tag() || d->outbox_.inflight() <= d->outbox_.stored()) return;
        d->guarded("acknowledgement", [&] {
            // Which replies are retried: src/core/delivery.h.
            const bool error = reply->type == REDIS_REPLY_ERROR;
            const referral::Reply verdict = referral::classify_reply(
                error, error ? std::string_view(reply->str, reply->len) : std::string_view());
            if (verdict == referral::Reply::acked) {
                if (d->mcf_->redis_replicas > 0) {
                    d->outbox_.store();  // acknowledged once a WAIT confirms it
                } else {
                    d->acked();
                }
            } else if (verdict == referral::Reply::retry) {
                ngx_log_error(NGX_LOG_ERR, d->log_, 0, "referral: Redis refused XADD, will retry: %*s",
                              ngx_min(reply->len, static_cast<size_t>(200)), reply->str);
                d->fail_connection("XADD refused");
            } else {
                ngx_log_error(NGX_LOG_ERR, d->log_, 0, "referral: Redis rejected an event: %*s",
                              ngx_min(reply->len, static_cast<size_t>(200)), reply->str);
                d->rejected();
            }
        });
    }

    static void on_reconnect(ngx_event_t* ev) noexcept {
        auto* d = static_cast<Delivery*>(ev->data);
        d->guarded("reconnect", [&] {
            if (d->ac_ != nullptr || d->sac_ != nullptr) return;
            if (referral::on_reconnect_timer(d->outbox_.empty(), d->backlog_) == referral::Reconnect::connect) {
                d->connect();
            } else {
                d->set_state(Link::idle);  // nothing to send: connect on demand
            }
        });
    }

    // ------------------------------------------------------------- outbox

    void send_unsent() {
        while (ac_ != nullptr && outbox_.unsent() > 0) {
            referral::OutboxEntry& e = outbox_.send_next(now_ms());
            if (redisAsyncFormattedCommand(ac_, on_reply, gen_tag(), e.command.data(),
                                           e.command.size()) != REDIS_OK) {
                fail_connection("cannot queue a command");
                return;
            }
            if (mcf_->redis_replicas > 0) unwaited_ = true;
        }
        // One WAIT after all the XADDs of this event-loop iteration.
        if (unwaited_ && !wait_ev_.posted) {
            ngx_post_event(&wait_ev_, &ngx_posted_events);  // a macro: braces matter
        }
    }

    // ------------------------------------------------------------ replicas

    static void on_wait_posted(ngx_event_t* ev) noexcept {
        auto* d = static_cast<Delivery*>(ev->data);
        d->guarded("WAIT", [&] {
            if (d->unwaited_) d->send_wait();
        });
    }

    // WAIT covers every write before it on this connection.
    void send_wait() {
        unwaited_ = false;
        if (ac_ == nullptr) return;
        if (redisAsyncCommand(ac_, on_wait, gen_tag(), "WAIT %d %d", static_cast<int>(mcf_->redis_replicas),
                              static_cast<int>(referral::Timing::kWaitTimeoutMs)) != REDIS_OK) {
            fail_connection("cannot queue a command");
            return;
        }
        waits_inflight_++;
    }

    static void on_wait(redisAsyncContext* ac, void* r, void* tag) noexcept {
        Delivery* d = from(ac);
        auto* reply = static_cast<redisReply*>(r);
        if (reply == nullptr || tag != d->gen_tag()) return;
        d->guarded("WAIT", [&] { d->waited(reply); });
    }

    void waited(const redisReply* reply) {
        waits_inflight_--;
        if (reply->type != REDIS_REPLY_INTEGER) {
            // Only an error's text is kept (redis_use_typed_replies).
            static const char kNotInteger[] = "not an integer reply";
            const bool error = reply->type == REDIS_REPLY_ERROR;
            ngx_log_error(NGX_LOG_ERR, log_, 0, "referral: Redis refused WAIT: %*s",
                          error ? ngx_min(reply->len, static_cast<size_t>(200)) : sizeof(kNotInteger) - 1,
                          error ? reply->str : kNotInteger);
            fail_connection("WAIT refused");
            return;
        }
        // Replies come in order: what is stored now was written before this
        // WAIT, so it is all confirmed or none of it is.
        if (referral::replicas_confirm(reply->integer, mcf_->redis_replicas)) {
            for (size_t n = outbox_.stored(); n > 0; n--) acked();
            replicas_short_ = false;
            return;
        }
        if (!replicas_short_) {
            ngx_log_error(NGX_LOG_WARN, log_, 0,
                          "referral: %L of %i replica(s) confirmed the events; they wait in memory",
                          static_cast<long long>(reply->integer), mcf_->redis_replicas);
            replicas_short_ = true;
        }
        if (waits_inflight_ == 0 && outbox_.stored() > 0) send_wait();  // WAIT again
    }

    void acked() {
        referral::OutboxEntry e = outbox_.ack();
        settle_journal(e);
        outage_ = false;  // over only once Redis has taken an event
        count(&Counters::sent);
        count(&Counters::buffered, -1);
        if (e.claim != 0) count(&Counters::replayed);
        settle_claim(e.claim);
        hold();
    }

    // Redis refused the oldest event for good: it is dropped, counted and
    // logged (above), and the events behind it go on.
    void rejected() {
        referral::OutboxEntry e = outbox_.reject();
        settle_journal(e);
        count(&Counters::buffered, -1);
        drop(1, "Redis rejected it");
        settle_claim(e.claim);
        hold();
    }

    void settle_claim(std::uint64_t claim) {
        if (claim == 0) return;
        auto it = claims_.find(claim);
        if (it != claims_.end() && --it->second.remaining == 0) {
            spool_->release(it->second.name);
            claims_.erase(it);
            replay();
        }
    }

    // The outbox is not empty: keep the worker alive on exit until Redis
    // has acknowledged it (or it is spooled).
    void hold() {
        tick_ev_.cancelable = outbox_.empty() ? 1 : 0;
        if (!outbox_.empty() && ngx_exiting) {
            if (tick_ev_.timer_set) ngx_del_timer(&tick_ev_);
            ngx_add_timer(&tick_ev_, kExitTickMs);
        }
    }

    // Gives up on everything still in memory: counted and logged as dropped.
    void drop_all(const char* why) {
        if (outbox_.empty()) return;
        drop(outbox_.size(), why);
        count(&Counters::buffered, -static_cast<ngx_atomic_int_t>(outbox_.size()));
        for (auto& e : outbox_.take_all()) settle_journal(e);
    }

    void drop(size_t n, const char* why) {
        count(&Counters::dropped, static_cast<ngx_atomic_int_t>(n));
        dropped_unlogged_ += n;
        std::int64_t now = now_ms();
        if (now - last_drop_log_ >= 1000) {
            ngx_log_error(NGX_LOG_ERR, log_, 0, "referral: dropped %uz event(s): %s",
                          dropped_unlogged_, why);
            dropped_unlogged_ = 0;
            last_drop_log_ = now;
        }
    }

    // ------------------------------------------------------------- journal

    // Journals a new event; its segment, or 0 when it is in memory only.
    std::uint64_t journal(std::string_view cmd) {
        if (!journal_) return 0;
        std::string err;
        std::uint64_t segment = journal_->add(cmd, &err);
        if (segment == 0) spool_error("journal: " + err);
        return segment;
    }

    void settle_journal(const referral::OutboxEntry& e) noexcept {
        if (e.journal != 0 && journal_) journal_->settle(e.journal);
    }

    // Seals what dead workers left (part files, journals, claims); the
    // events of their journals count as spooled, as they are replayed.
    void recover_orphans() {
        const size_t journaled = spool_->recover_orphans();
        if (journaled == 0) return;
        count(&Counters::spooled, static_cast<ngx_atomic_int_t>(journaled));
        ngx_log_error(NGX_LOG_WARN, log_, 0,
                      "referral: took over %uz event(s) from the journal of an exited worker",
                      journaled);
    }

    // --------------------------------------------------------------- spool

    // `first_time`: the event was never on disk before. A replayed event
    // that goes back to the spool (Redis dropped again) is not counted
    // twice, so `spooled - replayed` stays the backlog.
    bool to_spool(std::string_view cmd, std::int64_t queued_ms, bool first_time) {
        std::string err;
        if (!spool_->append(cmd, queued_ms, &err)) {
            // At max_size the event stays in memory, or is dropped when that
            // is full too (counted and logged there): not an alert.
            spool_error(err, spool_->full() ? NGX_LOG_WARN : NGX_LOG_ALERT);
            return false;
        }
        backlog_ = true;
        if (first_time) count(&Counters::spooled);
        return true;
    }

    // A full or broken disk fails every write: say so once a second.
    void spool_error(const std::string& err, ngx_uint_t level = NGX_LOG_ALERT) {
        std::int64_t now = now_ms();
        if (now - last_spool_error_log_ >= 1000) {
            ngx_log_error(level, log_, 0, "referral: spool: %s", err.c_str());
            last_spool_error_log_ = now;
        }
    }

    // Moves everything in memory to the spool (outage, exit). The entries
    // go to a file of their own, dated by the oldest of them, so the replay
    // puts them before anything spooled while they waited in memory.
    void spool_all(const char* why) {
        if (!spool_ || outbox_.empty() || ac_ != nullptr) return;
        std::string err;
        if (!spool_->seal(&err)) spool_error(err);
        // What a partial write leaves where: src/core/delivery.h.
        referral::SpoolMove m = referral::move_to_spool(
            outbox_.take_all(), [&](const referral::OutboxEntry& e) {
                if (!to_spool(e.command, e.queued_ms, e.claim == 0)) return false;
                settle_journal(e);  // on disk in the spool now
                return true;
            });
        for (auto& e : m.kept) outbox_.push(std::move(e.command), 0, e.queued_ms, e.journal);
        const size_t moved = m.moved;
        if (!spool_->seal(&err)) spool_error(err);
        count(&Counters::buffered, -static_cast<ngx_atomic_int_t>(moved));
        for (auto& c : claims_) {
            if (m.release_claims) {
                spool_->release(c.second.name);
            } else {
                spool_->unclaim(c.second.name);
            }
        }
        claims_.clear();
        if (why != nullptr && moved > 0) {
            ngx_log_error(NGX_LOG_NOTICE, log_, 0, "referral: spooled %uz event(s): %s", moved, why);
        }
        hold();
    }

    // Feeds spooled events back, one file at a time, oldest first.
    void replay() {
        if (!spool_ || !backlog_ || state_ != Link::ready || ac_ == nullptr || final_) return;
        if (ngx_exiting) return;  // the workers that stay replay it
        if (!claims_.empty() || outbox_.bytes() > outbox_.limit() / 2) return;
        std::string err;
        if (spool_->has_part() && !spool_->seal(&err)) {
            spool_error(err);
            return;
        }
        std::vector<std::string> records;
        std::string claim;
        std::int64_t file_ms = 0;
        while (spool_->claim_next(&records, &claim, &file_ms, &err)) {
            if (!err.empty()) {
                ngx_log_error(NGX_LOG_WARN, log_, 0, "referral: spool: %s", err.c_str());
                err.clear();
            }
            if (records.empty()) {
                spool_->release(claim);
                continue;
            }
            std::uint64_t id = ++claim_seq_;
            claims_[id] = Claim{claim, records.size()};
            for (auto& rec : records) outbox_.push(std::move(rec), id, file_ms);
            count(&Counters::buffered, static_cast<ngx_atomic_int_t>(records.size()));
            ngx_log_error(NGX_LOG_INFO, log_, 0, "referral: replaying %uz spooled event(s)",
                          records.size());
            send_unsent();
            hold();
            return;
        }
        if (!err.empty()) spool_error(err);
        if (!spool_->has_part()) backlog_ = false;  // caught up
    }

    // ---------------------------------------------------------------- tick

    static void on_tick(ngx_event_t* ev) noexcept {
        auto* d = static_cast<Delivery*>(ev->data);
        try {
            d->tick();
        } catch (...) {
            ngx_log_error(NGX_LOG_ALERT, d->log_, 0, "referral: periodic work failed: %s",
                          exception_message());
        }
    }

    void tick() {
        std::int64_t now = now_ms();
        if (const char* why = referral::timed_out(state_, now, connect_started_,
                                                  outbox_.oldest_inflight_ms())) {
            fail_connection(why);
        }
        if (ngx_exiting) {
            if (exiting_since_ == 0) exiting_since_ = now;
            switch (referral::exit_step(spool_ != nullptr, state_, outbox_.empty(), now - exiting_since_)) {
                case referral::ExitStep::spool_all:
                    if (ac_ != nullptr) fail_connection("the worker is exiting");
                    spool_all("the worker is exiting");
                    break;
                case referral::ExitStep::drop_all:
                    if (ac_ != nullptr) fail_connection("the worker is exiting");
                    drop_all("the worker is exiting and Redis is unreachable");
                    break;
                case referral::ExitStep::wait:
                    // Connected, but the replicas do not confirm: an exiting
                    // worker does not wait for them forever, the spool keeps
                    // the events (sent again by the workers that stay).
                    if (spool_ && mcf_->redis_replicas > 0 && outbox_.stored() > 0 &&
                        now - exiting_since_ > referral::Timing::kExitGraceMs) {
                        fail_connection("the worker is exiting and the replicas do not confirm");
                        spool_all("the worker is exiting");
                    }
                    break;
            }
            hold();
            if (!outbox_.empty()) ngx_add_timer(&tick_ev_, kExitTickMs);
            return;  // a cancelable timer is not re-armed: the worker may exit
        }
        if (spool_) {
            recover_orphans();
            if (!backlog_ && spool_->sealed_count() > 0) backlog_ = true;
            if (backlog_ && ac_ == nullptr && state_ == Link::idle) connect();
            replay();
        }
        if (dropped_unlogged_ > 0) drop(0, "the buffer is full and no spool is available");
        hold();
        ngx_add_timer(&tick_ev_, kTickMs);
    }

    MainConf* mcf_;
    ngx_log_t* log_;
    referral::Outbox outbox_;
    std::unique_ptr<referral::Spool> spool_;
    std::unique_ptr<referral::Journal> journal_;
    redisAsyncContext* ac_ = nullptr;
    Link state_ = Link::idle;
    std::uint64_t generation_ = 0;
    referral::Backoff backoff_;
    std::int64_t connect_started_ = 0;
    std::int64_t connected_at_ = 0;
    std::int64_t exiting_since_ = 0;
    bool backlog_ = false;
    bool final_ = false;
    bool outage_ = false;
    std::map<std::uint64_t, Claim> claims_;
    std::uint64_t claim_seq_ = 0;
    size_t dropped_unlogged_ = 0;
    std::int64_t last_spool_error_log_ = 0;
    std::int64_t last_drop_log_ = 0;
    ngx_event_t tick_ev_;
    ngx_event_t reconnect_ev_;
    ngx_event_t wait_ev_;       // posted: the WAIT after this iteration's XADDs
    ngx_event_t sentinel_ev_;   // the Sentinel being asked has this long
    redisAsyncContext* sac_ = nullptr;  // the Sentinel being asked, if any
    size_t sentinel_i_ = 0;
    bool unwaited_ = false;     // XADDs written since the last WAIT
    bool replicas_short_ = false;
    int waits_inflight_ = 0;
};

Delivery* delivery = nullptr;

}  // namespace

ngx_int_t delivery_init_process(ngx_cycle_t* cycle) noexcept {
    auto* mcf = static_cast<MainConf*>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_referral_module));
    if (mcf == nullptr || !mcf->redis_set) return NGX_OK;
    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) return NGX_OK;
    try {
        delivery = new Delivery(cycle, mcf);
        delivery->start();
    } catch (...) {
        // A worker that exits here is not respawned: it serves on and drops
        // (and counts) its events instead.
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "referral: cannot start event delivery: %s",
                      exception_message());
        delete delivery;
        delivery = nullptr;
        publish_redis_state(referral::RedisState::disconnected);
    }
    return NGX_OK;
}

void delivery_exit_process(ngx_cycle_t* cycle) noexcept {
    if (delivery == nullptr) return;
    try {
        delivery->shutdown();
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "referral: event delivery shutdown failed: %s",
                      exception_message());
    }
    delete delivery;
    delivery = nullptr;
}

void deliver(ngx_log_t* log, const char* command, size_t len) noexcept {
    if (delivery == nullptr) {
        count(&Counters::dropped);
        ngx_log_error(NGX_LOG_ERR, log, 0, "referral: event dropped: no delivery in this process");
        return;
    }
    try {
        delivery->push(command, len);
    } catch (...) {
        count(&Counters::dropped);
        ngx_log_error(NGX_LOG_ALERT, log, 0, "referral: event dropped: %s", exception_message());
    }
}

}  // namespace referral_ngx
