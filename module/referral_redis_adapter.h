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

}  // namespace referral_ngx
