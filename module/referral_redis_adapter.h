// hiredis's async API driven by nginx's event loop.
#pragma once
#include <hiredis/async.h>

#include "referral_module.h"

namespace referral_ngx {

// Wraps the context's socket in an ngx_connection_t and installs hiredis's
// event hooks. hiredis owns the socket: its cleanup hook releases the
// ngx_connection_t without closing the fd, and redisFree() closes it, once.
// On false nothing was attached and the caller still frees the context.
bool redis_attach(redisAsyncContext* ac, ngx_log_t* log) noexcept;

// The events connection reads nothing from a bulk or status reply but its
// type (an XADD's answer is the entry's id, which the module has no use
// for): such a top-level reply becomes a shared, static redisReply with no
// text, instead of two allocations, a copy and two frees per event.
// Errors, integers, arrays and their elements are hiredis's own objects.
void redis_use_typed_replies(redisAsyncContext* ac) noexcept;

}  // namespace referral_ngx
