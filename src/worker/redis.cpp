#include "worker/redis.h"

#include <sys/time.h>

namespace referral::worker {

void Redis::connect() {
    close();
    struct timeval tv = {5, 0};
    redisContext* c = address_.unix_path.empty()
                          ? redisConnectWithTimeout(address_.host.c_str(), address_.port, tv)
                          : redisConnectUnixWithTimeout(address_.unix_path.c_str(), tv);
    if (!c) throw RedisError("cannot allocate a Redis context", false);
    if (c->err) {
        std::string msg = c->errstr;
        redisFree(c);
        throw RedisError("cannot connect to " + describe(address_) + ": " + msg, false);
    }
    struct timeval ct = {timeout_ms_ / 1000, (timeout_ms_ % 1000) * 1000};
    redisSetTimeout(c, ct);
    ctx_ = c;
    try {
        if (!address_.password.empty()) {
            if (address_.user.empty()) command({"AUTH", address_.password});
            else command({"AUTH", address_.user, address_.password});
        }
        if (address_.db != 0) {
            std::string db = std::to_string(address_.db);
            command({"SELECT", db});
        }
    } catch (const RedisError& e) {
        close();
        // The message is Redis's (WRONGPASS ...), never the password.
        throw RedisError(std::string("Redis at ") + describe(address_) + " refused the login: " + e.what(),
                         false);
    }
}

void Redis::close() noexcept {
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
}

Reply Redis::read_reply() {
    void* r = nullptr;
    if (redisGetReply(ctx_, &r) != REDIS_OK || !r) {
        std::string msg = ctx_->errstr[0] ? ctx_->errstr : "connection lost";
        close();
        throw RedisError("Redis " + describe(address_) + ": " + msg, false);
    }
    return Reply(static_cast<redisReply*>(r));
}

Reply Redis::command(const std::vector<std::string_view>& args) {
    if (!ctx_) throw RedisError("not connected to Redis", false);
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (auto a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
        std::string msg = ctx_->errstr;
        close();
        throw RedisError("Redis: " + msg, false);
    }
    Reply r = read_reply();
    if (r->type == REDIS_REPLY_ERROR) throw RedisError(std::string(r->str, r->len), true);
    return r;
}

std::vector<Reply> Redis::pipeline(const std::vector<std::vector<std::string_view>>& commands) {
    if (!ctx_) throw RedisError("not connected to Redis", false);
    for (const auto& args : commands) {
        std::vector<const char*> argv;
        std::vector<size_t> lens;
        for (auto a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
        if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
            std::string msg = ctx_->errstr;
            close();
            throw RedisError("Redis: " + msg, false);
        }
    }
    std::vector<Reply> out;
    out.reserve(commands.size());
    for (std::size_t i = 0; i < commands.size(); i++) out.push_back(read_reply());
    return out;
}

static std::string_view view(const redisReply* r) {
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)) return {};
    return std::string_view(r->str, r->len);
}

std::vector<Entry> entry_array(const redisReply* array) {
    std::vector<Entry> out;
    if (!array || array->type != REDIS_REPLY_ARRAY) return out;
    out.reserve(array->elements);
    for (std::size_t i = 0; i < array->elements; i++) {
        const redisReply* e = array->element[i];
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 1) continue;
        Entry entry;
        entry.id = view(e->element[0]);
        if (entry.id.empty()) continue;
        const redisReply* kv = e->elements >= 2 ? e->element[1] : nullptr;
        if (!kv || kv->type != REDIS_REPLY_ARRAY) {
            entry.deleted = true;
        } else {
            entry.fields.reserve(kv->elements / 2);
            for (std::size_t k = 0; k + 1 < kv->elements; k += 2) {
                entry.fields.push_back({view(kv->element[k]), view(kv->element[k + 1])});
            }
        }
        out.push_back(std::move(entry));
    }
    return out;
}

std::vector<Entry> stream_entries(const redisReply* reply) {
    // [[key, [[id, [f, v, ...]], ...]]] or nil
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) return {};
    const redisReply* s = reply->element[0];
    if (!s || s->type != REDIS_REPLY_ARRAY || s->elements < 2) return {};
    return entry_array(s->element[1]);
}

}  // namespace referral::worker
