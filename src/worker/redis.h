// A synchronous hiredis connection for the worker: connect (AUTH, SELECT),
// one command or a pipeline of commands, stream replies as entries.
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

struct ReplyDeleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class Redis {
public:
    Redis(RedisAddress address, int command_timeout_ms)
        : address_(std::move(address)), timeout_ms_(command_timeout_ms) {}
    ~Redis() { close(); }
    Redis(const Redis&) = delete;
    Redis& operator=(const Redis&) = delete;

    bool connected() const noexcept { return ctx_ != nullptr; }
    void connect();  // throws RedisError
    void close() noexcept;

    // Error replies throw RedisError(is_reply = true).
    Reply command(const std::vector<std::string_view>& args);
    // Sends every command, then reads every reply; error replies are
    // returned, not thrown.
    std::vector<Reply> pipeline(const std::vector<std::vector<std::string_view>>& commands);

    const RedisAddress& address() const noexcept { return address_; }

private:
    Reply read_reply();

    RedisAddress address_;
    int timeout_ms_;
    redisContext* ctx_ = nullptr;
};

struct Entry {
    std::string_view id;
    std::vector<Field> fields;
    bool deleted = false;  // pending, but its data is gone from the stream
};

// Entries of an XREADGROUP reply (nil: none), or of the entry array of an
// XAUTOCLAIM reply. Views point into `reply`.
std::vector<Entry> stream_entries(const redisReply* reply);
std::vector<Entry> entry_array(const redisReply* array);

}  // namespace referral::worker
