// Counters shared by every worker, and the `referral_status` handler.
//
// One shared memory zone, kept across reloads, holds a slot per worker
// process, claimed by pid in init_process. A process writes only its own
// slot; the handler sums them all. Counters are summed over every slot,
// dead owners' included, so they never go back when a worker crashes or a
// reload replaces the workers (a new process that takes over a dead one's
// slot adds to what it left). Gauges (buffered, the Redis connection) are
// summed over the slots of live processes only, so a worker killed with
// SIGKILL stops counting at once.
#include <signal.h>

#include "core/status.h"
#include "referral_module.h"

namespace referral_ngx {

Counters* counters = nullptr;

namespace {

// Workers of every cycle still alive (a reload overlaps old and new ones).
// A process that finds no slot counts nothing and says so.
constexpr ngx_uint_t kSlots = 512;

struct Slot {
    ngx_atomic_t pid;    // owner; 0 when free
    ngx_atomic_t redis;  // referral::RedisState of the owner's connection
    Counters c;
};

struct Shared {
    Slot slots[kSlots];
};

Shared* shared = nullptr;
Slot* own = nullptr;

ngx_int_t init_zone(ngx_shm_zone_t* zone, void* data) noexcept {
    if (data != nullptr) {  // reload: keep the old cycle's counters
        zone->data = data;
        shared = static_cast<Shared*>(data);
        return NGX_OK;
    }
    auto* shpool = reinterpret_cast<ngx_slab_pool_t*>(zone->shm.addr);
    if (zone->shm.exists) {
        zone->data = shpool->data;
        shared = static_cast<Shared*>(shpool->data);
        return NGX_OK;
    }
    auto* s = static_cast<Shared*>(ngx_slab_calloc(shpool, sizeof(Shared)));
    if (s == nullptr) return NGX_ERROR;
    shpool->data = s;
    zone->data = s;
    shared = s;
    return NGX_OK;
}

bool alive(ngx_atomic_uint_t pid) {
    if (pid == 0) return false;
    if (static_cast<ngx_pid_t>(pid) == ngx_pid) return true;
    // EPERM: alive, under another user. A pid the kernel reused for an
    // unrelated process would pass too, until a worker takes the slot.
    return kill(static_cast<pid_t>(pid), 0) == 0 || ngx_errno == NGX_EPERM;
}

void add(referral::StatusTotals* t, const Counters& c, bool live) {
    t->sent += c.sent;
    t->spooled += c.spooled;
    t->replayed += c.replayed;
    t->dropped += c.dropped;
    t->clicks += c.clicks;
    t->conversions += c.conversions;
    t->malformed_conversions += c.malformed_conversions;
    t->invalid_codes += c.invalid_codes;
    t->rejected_cookies += c.rejected_cookies;
    t->skipped += c.skipped;
    // ngx_atomic_t is unsigned: a gauge is read back as signed.
    auto buffered = static_cast<ngx_atomic_int_t>(c.buffered);
    if (live && buffered > 0) t->buffered += static_cast<std::uint64_t>(buffered);
}

referral::StatusTotals totals() {
    referral::StatusTotals t;
    if (shared == nullptr) return t;
    for (Slot& s : shared->slots) {
        bool live = alive(s.pid);
        add(&t, s.c, live);
        if (!live) continue;
        t.workers++;
        ngx_atomic_uint_t st = s.redis;
        if (st < referral::kRedisStates) t.redis[st]++;
    }
    return t;
}

// r->headers_in.accept exists only in builds with NGX_HTTP_HEADERS: the
// list is read instead, which every build has.
ngx_str_t request_header(ngx_http_request_t* r, const char* lowcase) {
    const size_t len = ngx_strlen(lowcase);
    for (ngx_list_part_t* part = &r->headers_in.headers.part; part != nullptr; part = part->next) {
        auto* h = static_cast<ngx_table_elt_t*>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; i++) {
            if (h[i].key.len == len &&
                ngx_strncasecmp(h[i].key.data, reinterpret_cast<u_char*>(const_cast<char*>(lowcase)), len) == 0) {
                return h[i].value;
            }
        }
    }
    return ngx_null_string;
}

ngx_int_t send(ngx_http_request_t* r, const char* type, const char* body, size_t len) {
    auto* b = static_cast<ngx_buf_t*>(ngx_create_temp_buf(r->pool, len));
    if (b == nullptr) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    b->last = ngx_cpymem(b->last, body, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = static_cast<off_t>(len);
    r->headers_out.content_type.data = reinterpret_cast<u_char*>(const_cast<char*>(type));
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = nullptr;
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) return rc;
    ngx_chain_t out = {b, nullptr};
    return ngx_http_output_filter(r, &out);
}

ngx_int_t status_handler(ngx_http_request_t* r) noexcept {
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) return NGX_HTTP_NOT_ALLOWED;
    ngx_int_t rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) return rc;

    ngx_str_t format = ngx_null_string;
    (void)ngx_http_arg(r, reinterpret_cast<u_char*>(const_cast<char*>("format")), 6, &format);
    const ngx_str_t accept = request_header(r, "accept");
    const referral::StatusTotals t = totals();
    char body[referral::kStatusMaxLen];
    if (referral::wants_prometheus(view(format), view(accept))) {
        size_t len = referral::render_prometheus(t, body, sizeof(body));
        if (len == 0) return NGX_HTTP_INTERNAL_SERVER_ERROR;
        return send(r, referral::kPrometheusContentType, body, len);
    }
    size_t len = referral::render_json(t, body, sizeof(body));
    if (len == 0) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    return send(r, "application/json", body, len);
}

}  // namespace

ngx_int_t add_counters_zone(ngx_conf_t* cf, MainConf* mcf) noexcept {
    static ngx_str_t name = ngx_string("referral_status");
    // The slab allocator's own pages and headers on top of the slots.
    size_t size = ngx_align(sizeof(Shared), ngx_pagesize) + 8 * ngx_pagesize;
    mcf->counters_zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_referral_module);
    if (mcf->counters_zone == nullptr) return NGX_ERROR;
    mcf->counters_zone->init = init_zone;
    return NGX_OK;
}

void claim_counters_slot(ngx_log_t* log) noexcept {
    if (shared == nullptr) return;
    const auto me = static_cast<ngx_atomic_uint_t>(ngx_pid);
    // A free slot first, else one whose owner died (its counters stay and
    // go on from there); compare-and-swap, as processes start together.
    for (int pass = 0; pass < 2 && own == nullptr; pass++) {
        for (Slot& s : shared->slots) {
            ngx_atomic_uint_t pid = s.pid;
            // pid == me: left by a dead process whose pid came back as ours.
            bool take = pid == me || (pass == 0 ? pid == 0 : !alive(pid));
            if (!take) continue;
            if (pid != me && !ngx_atomic_cmp_set(&s.pid, pid, me)) continue;
            s.c.buffered = 0;  // the dead owner's outbox is gone with it
            s.redis = static_cast<ngx_atomic_uint_t>(referral::RedisState::idle);
            own = &s;
            break;
        }
    }
    if (own == nullptr) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "referral: all %ui status slots are taken; this process is not counted",
                      kSlots);
        return;
    }
    counters = &own->c;
}

void release_counters_slot() noexcept {
    if (own == nullptr) return;
    own->c.buffered = 0;
    counters = nullptr;
    (void)ngx_atomic_cmp_set(&own->pid, static_cast<ngx_atomic_uint_t>(ngx_pid), 0);
    own = nullptr;
}

void publish_redis_state(referral::RedisState state) noexcept {
    if (own != nullptr) own->redis = static_cast<ngx_atomic_uint_t>(state);
}

char* status_directive(ngx_conf_t* cf, ngx_command_t*, void*) noexcept {
    auto* clcf = static_cast<ngx_http_core_loc_conf_t*>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = status_handler;
    return NGX_CONF_OK;
}

}  // namespace referral_ngx
