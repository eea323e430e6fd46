// A synchronous hiredis connection for the worker: connect (AUTH, SELECT),
// one command or a pipeline of commands, stream replies as entries.
//
// A connection made with `arena_replies` builds its replies in an Arena
// instead of one malloc per element (a batch of 500 events is ~30 000
// elements): the stream reader's hot path.
#pragma once
#include <hiredis.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "worker/config.h"
#include "worker/processor.h"

namespace referral::worker {

struct RedisError : std::runtime_error {
    // `reply`: Redis answered with an error (NOGROUP, WRONGTYPE, ...);
    // otherwise the connection failed and was closed.
    RedisError(const std::string& m, bool reply) : std::runtime_error(m), is_reply(reply) {}
    bool is_reply;
};

// Bump allocator for replies; everything is freed at once.
class Arena {
public:
    Arena() = default;
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
    void* alloc(std::size_t n);
    void clear();

private:
    struct Block {
        std::unique_ptr<char[]> data;
        std::size_t size;
    };
    std::vector<Block> blocks_;
    std::size_t used_ = 0;  // in the last block
};

struct ReplyDeleter {
    bool owned = true;  // false: the reply lives in an Arena
    void operator()(redisReply* r) const noexcept {
        if (owned) freeReplyObject(r);
    }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class Redis {
public:
    Redis(RedisAddress address, int command_timeout_ms, bool arena_replies = false)
        : address_(std::move(address)), timeout_ms_(command_timeout_ms), arena_replies_(arena_replies) {}
    ~Redis() { close(); }
    Redis(const Redis&) = delete;
    Redis& operator=(const Redis&) = delete;

    bool connected() const noexcept { return ctx_ != nullptr; }
    void connect();  // throws RedisError
    void close() noexcept;

    // Error replies throw RedisError(is_reply = true). With arena replies,
    // the reply lives until the next command.
    Reply command(const std::vector<std::string_view>& args);
    // Arena replies only: the reply is built in *arena and lives as long
    // as it.
    redisReply* command_into(const std::vector<std::string_view>& args, Arena* arena);
    // Pipelining: sends a command at once; read_into() reads its reply
    // later, before any other command.
    void send_now(const std::vector<std::string_view>& args);
    redisReply* read_into(Arena* arena) { return read_reply(arena); }

    const RedisAddress& address() const noexcept { return address_; }

private:
    void find_primary();  // Sentinel addresses: sets host and port; throws RedisError
    void send(const std::vector<std::string_view>& args);
    redisReply* read_reply(Arena* arena);

    RedisAddress address_;
    int timeout_ms_;
    bool arena_replies_;
    Arena scratch_;
    redisContext* ctx_ = nullptr;
};

struct Entry {
    std::string_view id;
    std::vector<Field> fields;
    bool deleted = false;  // pending, but its data is gone from the stream
};

// Entries of an XREADGROUP reply (nil: none), or of the entry array of an
// XAUTOCLAIM reply. Views point into the reply.
std::vector<Entry> stream_entries(const redisReply* reply);
std::vector<Entry> entry_array(const redisReply* array);

}  // namespace referral::worker
