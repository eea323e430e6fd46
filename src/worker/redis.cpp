#include "worker/redis.h"

#include <sys/time.h>

#include <algorithm>
#include <cstring>

namespace referral::worker {

// ---------------------------------------------------------------- arena

void* Arena::alloc(std::size_t n) {
    n = (n + 7) & ~static_cast<std::size_t>(7);
    if (blocks_.empty() || used_ + n > blocks_.back().size) {
        std::size_t size = std::max<std::size_t>(n, 256 * 1024);
        blocks_.push_back(Block{std::unique_ptr<char[]>(new char[size]), size});
        used_ = 0;
    }
    void* p = blocks_.back().data.get() + used_;
    used_ += n;
    return p;
}

void Arena::clear() {
    if (blocks_.size() > 1) {
        // keep one block, as large as the largest, for the next reply
        std::size_t largest = 0;
        for (auto& b : blocks_) largest = std::max(largest, b.size);
        blocks_.clear();
        blocks_.push_back(Block{std::unique_ptr<char[]>(new char[largest]), largest});
    }
    used_ = 0;
}

namespace {

// hiredis reply object functions that build redisReply trees in an Arena
// (task->privdata); freeing is a no-op.
redisReply* arena_reply(const redisReadTask* task, int type) {
    auto* arena = static_cast<Arena*>(task->privdata);
    auto* r = static_cast<redisReply*>(arena->alloc(sizeof(redisReply)));
    std::memset(r, 0, sizeof(*r));
    r->type = type;
    if (task->parent) {
        auto* parent = static_cast<redisReply*>(task->parent->obj);
        parent->element[task->idx] = r;
    }
    return r;
}

void* arena_string(const redisReadTask* task, char* str, size_t len) {
    redisReply* r = arena_reply(task, task->type);
    auto* arena = static_cast<Arena*>(task->privdata);
    char* copy = static_cast<char*>(arena->alloc(len + 1));
    std::memcpy(copy, str, len);
    copy[len] = '\0';
    r->str = copy;
    r->len = len;
    return r;
}

void* arena_array(const redisReadTask* task, int elements) {
    redisReply* r = arena_reply(task, REDIS_REPLY_ARRAY);
    if (elements > 0) {
        auto* arena = static_cast<Arena*>(task->privdata);
        r->element = static_cast<redisReply**>(arena->alloc(sizeof(redisReply*) * static_cast<std::size_t>(elements)));
        std::memset(r->element, 0, sizeof(redisReply*) * static_cast<std::size_t>(elements));
    }
    r->elements = static_cast<size_t>(elements < 0 ? 0 : elements);
    return r;
}

void* arena_integer(const redisReadTask* task, long long value) {
    redisReply* r = arena_reply(task, REDIS_REPLY_INTEGER);
    r->integer = value;
    return r;
}

void* arena_nil(const redisReadTask* task) { return arena_reply(task, REDIS_REPLY_NIL); }

void arena_free(void*) {}

redisReplyObjectFunctions kArenaFunctions = {arena_string, arena_array, arena_integer, arena_nil, arena_free};

}  // namespace

// ----------------------------------------------------------- connection

// Asks the Sentinels, in order, for the current primary of the service
// (SENTINEL get-master-addr-by-name); the first that answers decides.
void Redis::find_primary() {
    std::string errors;
    for (const auto& s : address_.sentinels) {
        struct timeval tv = {1, 0};
        redisContext* c = redisConnectWithTimeout(s.first.c_str(), s.second, tv);
        if (!c || c->err) {
            errors += "; " + s.first + ":" + std::to_string(s.second) + ": " + (c ? c->errstr : "no memory");
            if (c) redisFree(c);
            continue;
        }
        redisSetTimeout(c, tv);
        auto* r = static_cast<redisReply*>(
            redisCommand(c, "SENTINEL get-master-addr-by-name %s", address_.service.c_str()));
        bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                  r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING;
        if (ok) {
            address_.host.assign(r->element[0]->str, r->element[0]->len);
            address_.port = std::atoi(r->element[1]->str);
        } else {
            errors += "; " + s.first + ":" + std::to_string(s.second) + ": " +
                      (r && r->type == REDIS_REPLY_ERROR ? std::string(r->str) : "does not know " + address_.service);
        }
        if (r) freeReplyObject(r);
        redisFree(c);
        if (ok) return;
    }
    throw RedisError("no Sentinel of " + describe(address_) + " named a primary" + errors, false);
}

void Redis::connect() {
    close();
    if (!address_.sentinels.empty()) find_primary();
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
    if (arena_replies_) c->reader->fn = &kArenaFunctions;
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
        if (!address_.sentinels.empty()) {
            // A Sentinel's answer may be stale during a failover: write
            // only to a server that says it is the primary.
            Reply role = command({"ROLE"});
            if (role->type != REDIS_REPLY_ARRAY || role->elements == 0 ||
                role->element[0]->type != REDIS_REPLY_STRING || std::strcmp(role->element[0]->str, "master") != 0) {
                close();
                throw RedisError(address_.host + ":" + std::to_string(address_.port) +
                                     " is not the primary yet (failover in progress)",
                                 false);
            }
        }
    } catch (const RedisError& e) {
        if (!e.is_reply && !ctx_) throw;
        close();
        // The message is Redis's (WRONGPASS ...), never the password.
        throw RedisError(std::string("Redis at ") + describe(address_) + " refused the login: " + e.what(),
                         false);
    }
}

void Redis::close() noexcept {
    if (ctx_) redisFree(ctx_);  // with arena replies, freeing is a no-op
    ctx_ = nullptr;
}

void Redis::send(const std::vector<std::string_view>& args) {
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
}

void Redis::send_now(const std::vector<std::string_view>& args) {
    send(args);
    int done = 0;
    while (!done) {
        if (redisBufferWrite(ctx_, &done) != REDIS_OK) {
            std::string msg = ctx_->errstr[0] ? ctx_->errstr : "connection lost";
            close();
            throw RedisError("Redis " + describe(address_) + ": " + msg, false);
        }
    }
}

redisReply* Redis::read_reply(Arena* arena) {
    if (arena_replies_) ctx_->reader->privdata = arena;
    void* r = nullptr;
    if (redisGetReply(ctx_, &r) != REDIS_OK || !r) {
        std::string msg = ctx_->errstr[0] ? ctx_->errstr : "connection lost";
        close();
        throw RedisError("Redis " + describe(address_) + ": " + msg, false);
    }
    auto* reply = static_cast<redisReply*>(r);
    if (reply->type == REDIS_REPLY_ERROR) {
        std::string msg(reply->str, reply->len);
        if (!arena_replies_) freeReplyObject(reply);
        throw RedisError(msg, true);
    }
    return reply;
}

Reply Redis::command(const std::vector<std::string_view>& args) {
    send(args);
    if (arena_replies_) {
        scratch_.clear();
        return Reply(read_reply(&scratch_), ReplyDeleter{false});
    }
    return Reply(read_reply(nullptr), ReplyDeleter{true});
}

redisReply* Redis::command_into(const std::vector<std::string_view>& args, Arena* arena) {
    send(args);
    return read_reply(arena);
}

// -------------------------------------------------------------- entries

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
