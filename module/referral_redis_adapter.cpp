#include "referral_redis_adapter.h"

namespace referral_ngx {
namespace {

// Level-triggered registration (flags 0): hiredis reads at most 16 KB per
// redisAsyncHandleRead(), so with epoll's edge-triggered mode a burst of
// replies could stall; level-triggered events fire again while data waits.

void on_read(ngx_event_t* ev) noexcept {
    auto* c = static_cast<ngx_connection_t*>(ev->data);
    if (c->close) {
        // worker_shutdown_timeout expired: nginx closes what is left. The
        // disconnect callback spools what is still unacknowledged.
        redisAsyncFree(static_cast<redisAsyncContext*>(c->data));
        return;
    }
    redisAsyncHandleRead(static_cast<redisAsyncContext*>(c->data));
    // `c` may be released by now (hiredis freed the context): no access.
}

// Set while hiredis writes from on_write(): a write it could not finish
// then waits for the socket (epoll), not for another posted call.
bool writing = false;

void on_write(ngx_event_t* ev) noexcept {
    auto* c = static_cast<ngx_connection_t*>(ev->data);
    writing = true;
    redisAsyncHandleWrite(static_cast<redisAsyncContext*>(c->data));
    writing = false;
}

void add_read(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (!c->read->active && ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0, "referral: cannot watch the Redis socket");
    }
}

void del_read(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (c->read->active) ngx_del_event(c->read, NGX_READ_EVENT, 0);
}

// Commands queued on a connected socket are written once, after this
// event-loop iteration (a posted event): one write() for all the XADDs of
// the iteration, and no epoll_ctl() to watch for writability and another
// to stop, which a loopback socket almost always is. Only a write that the
// socket cannot take whole, or a connect in progress (hiredis 0.14 would
// take a connect still in progress for done), waits for epoll.
void add_write(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (c->write->active) return;
    auto* ac = static_cast<redisAsyncContext*>(c->data);
    if (!writing && (ac->c.flags & REDIS_CONNECTED)) {
        if (!c->write->posted) {
            ngx_post_event(c->write, &ngx_posted_events);  // a macro: braces matter
        }
        return;
    }
    if (ngx_add_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0, "referral: cannot watch the Redis socket");
    }
}

void del_write(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (c->write->active) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
}

void cleanup(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    // The fd is closed by redisFree() right after this hook: NGX_CLOSE_EVENT
    // only clears nginx's bookkeeping, the kernel drops the fd from epoll.
    if (c->read->active) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    if (c->write->active) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    // ngx_delete_posted_event() is a multi-statement macro: braces matter.
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
    if (c->read->timer_set) ngx_del_timer(c->read);
    if (c->write->timer_set) ngx_del_timer(c->write);
    ngx_free_connection(c);  // reads c->fd to clear its slot: before the reset
    c->fd = static_cast<ngx_socket_t>(-1);  // hiredis closes it, not nginx
}

// Read-only in practice: callbacks look at `type` alone (str is null, len
// 0), and free_reply() never frees them.
redisReply bulk_reply = {};
redisReply status_reply = {};
redisReplyObjectFunctions typed_functions;
const redisReplyObjectFunctions* hiredis_functions = nullptr;

void* create_string(const redisReadTask* task, char* str, size_t len) noexcept {
    if (task->parent == nullptr) {
        if (task->type == REDIS_REPLY_STRING) return &bulk_reply;
        if (task->type == REDIS_REPLY_STATUS) return &status_reply;
    }
    return hiredis_functions->createString(task, str, len);
}

void free_reply(void* reply) noexcept {
    if (reply == &bulk_reply || reply == &status_reply) return;
    hiredis_functions->freeObject(reply);
}

}  // namespace

void redis_use_typed_replies(redisAsyncContext* ac) noexcept {
    redisReader* reader = ac->c.reader;
    if (reader == nullptr || reader->fn == nullptr) return;
    if (hiredis_functions == nullptr) {
        // hiredis's defaults, whatever fields this version has, with two
        // of them replaced.
        hiredis_functions = reader->fn;
        typed_functions = *reader->fn;
        typed_functions.createString = create_string;
        typed_functions.freeObject = free_reply;
        bulk_reply.type = REDIS_REPLY_STRING;
        status_reply.type = REDIS_REPLY_STATUS;
    }
    if (reader->fn == hiredis_functions) reader->fn = &typed_functions;
}

bool redis_attach(redisAsyncContext* ac, ngx_log_t* log) noexcept {
    ngx_connection_t* c = ngx_get_connection(ac->c.fd, log);
    if (c == nullptr) return false;
    c->data = ac;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = on_read;
    c->write->handler = on_write;
    ac->ev.data = c;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return true;
}

}  // namespace referral_ngx
