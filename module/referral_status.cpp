// Counters shared by every worker (one small shared memory zone, kept across
// reloads) and the `referral_status` JSON handler.
#include "referral_module.h"

namespace referral_ngx {

Counters* counters = nullptr;

namespace {

ngx_int_t init_zone(ngx_shm_zone_t* zone, void* data) noexcept {
    if (data != nullptr) {  // reload: keep the old cycle's counters
        zone->data = data;
        counters = static_cast<Counters*>(data);
        return NGX_OK;
    }
    auto* shpool = reinterpret_cast<ngx_slab_pool_t*>(zone->shm.addr);
    if (zone->shm.exists) {
        zone->data = shpool->data;
        counters = static_cast<Counters*>(shpool->data);
        return NGX_OK;
    }
    auto* c = static_cast<Counters*>(ngx_slab_calloc(shpool, sizeof(Counters)));
    if (c == nullptr) return NGX_ERROR;
    shpool->data = c;
    zone->data = c;
    counters = c;
    return NGX_OK;
}

ngx_int_t status_handler(ngx_http_request_t* r) noexcept {
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) return NGX_HTTP_NOT_ALLOWED;
    ngx_int_t rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) return rc;

    Counters zero{};
    const Counters* c = counters != nullptr ? counters : &zero;
    size_t size = 512;
    auto* b = static_cast<ngx_buf_t*>(ngx_create_temp_buf(r->pool, size));
    if (b == nullptr) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    b->last = ngx_snprintf(
        b->last, size,
        "{\"sent\":%uA,\"buffered\":%uA,\"spooled\":%uA,\"replayed\":%uA,\"dropped\":%uA,"
        "\"clicks\":%uA,\"invalid_codes\":%uA,\"rejected_cookies\":%uA,\"conversions\":%uA,"
        "\"malformed_conversions\":%uA,\"redis\":\"%s\"}\n",
        c->sent, c->buffered, c->spooled, c->replayed, c->dropped, c->clicks, c->invalid_codes,
        c->rejected_cookies, c->conversions, c->malformed_conversions, delivery_state());
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = nullptr;
    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) return rc;
    ngx_chain_t out = {b, nullptr};
    return ngx_http_output_filter(r, &out);
}

}  // namespace

ngx_int_t add_counters_zone(ngx_conf_t* cf, MainConf* mcf) noexcept {
    static ngx_str_t name = ngx_string("referral_counters");
    mcf->counters_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize, &ngx_http_referral_module);
    if (mcf->counters_zone == nullptr) return NGX_ERROR;
    mcf->counters_zone->init = init_zone;
    return NGX_OK;
}

char* status_directive(ngx_conf_t* cf, ngx_command_t*, void*) noexcept {
    auto* clcf = static_cast<ngx_http_core_loc_conf_t*>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = status_handler;
    return NGX_CONF_OK;
}

}  // namespace referral_ngx
