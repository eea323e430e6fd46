// The header filter: adds the attribution cookie to any response (including
// one made by `return 302`), and turns each conversion header line from the
// backend into a conversion event, removing it from what the client sees.
#include <string_view>

#include "core/conversion.h"
#include "referral_compat.h"
#include "referral_events.h"
#include "referral_module.h"

namespace referral_ngx {
namespace {

ngx_http_output_header_filter_pt next_header_filter;

constexpr size_t kMaxLoggedHeader = 256;

void add_set_cookie(ngx_http_request_t* r, const RequestCtx* ctx) {
    static const ngx_str_t key = ngx_string("Set-Cookie");
    if (!add_response_header(r, key, ctx->set_cookie)) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "referral: cannot add Set-Cookie");
    }
}

void record_conversions(ngx_http_request_t* r, const LocConf* lcf, const RequestCtx* ctx) {
    const ngx_str_t& name = lcf->conversion_header;
    std::string_view code;
    if (ctx != nullptr) code = view(ctx->code);
    for (ngx_list_part_t* part = &r->headers_out.headers.part; part != nullptr; part = part->next) {
        auto* h = static_cast<ngx_table_elt_t*>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; i++) {
            if (h[i].hash == 0 || h[i].key.len != name.len ||
                ngx_strncasecmp(h[i].key.data, name.data, name.len) != 0) {
                continue;
            }
            h[i].hash = 0;  // never reaches the client, valid or not
            referral::Conversion conv;
            std::string_view value = view(h[i].value);
            if (const char* err = referral::parse_conversion(value, &conv)) {
                count(&Counters::malformed_conversions);
                // The value is the backend's: bound it and escape it.
                size_t n = ngx_min(h[i].value.len, kMaxLoggedHeader);
                u_char logged[kMaxLoggedHeader * 3];
                size_t escaped = n + 2 * ngx_escape_uri(nullptr, h[i].value.data, n,
                                                        NGX_ESCAPE_URI_COMPONENT);
                ngx_escape_uri(logged, h[i].value.data, n, NGX_ESCAPE_URI_COMPONENT);
                ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                              "referral: malformed \"%V\" header (%s): \"%*s%s\"", &name, err,
                              escaped, logged, h[i].value.len > n ? "..." : "");
                continue;
            }
            if (ctx == nullptr) continue;  // out of memory: stripped, not recorded
            // A response from proxy_cache replays the conversion the backend
            // reported once: stripped, not recorded again.
            if (r->cached) continue;
            count(&Counters::conversions);
            record_event(r, "conversion", ctx, code, &conv, now_ms());
        }
    }
}

ngx_int_t header_filter(ngx_http_request_t* r) noexcept {
    if (r != r->main) return next_header_filter(r);
    auto* lcf = static_cast<LocConf*>(ngx_http_get_module_loc_conf(r, ngx_http_referral_module));

    // An attribution made before an internal redirect (try_files,
    // error_page) into a location with referral off still gets its cookie:
    // its click is already recorded with this visitor id.
    RequestCtx* ctx = lcf->enable ? attribution(r) : existing_attribution(r);
    try {
        if (ctx != nullptr && ctx->set_cookie.len > 0) add_set_cookie(r, ctx);
        if (lcf->enable && lcf->conversion_header.len > 0) record_conversions(r, lcf, ctx);
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "referral: header filter failed: %s",
                      exception_message());
    }
    return next_header_filter(r);
}

}  // namespace

ngx_int_t init_filter(ngx_conf_t*) noexcept {
    next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = header_filter;
    return NGX_OK;
}

}  // namespace referral_ngx
