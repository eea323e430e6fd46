// Attribution: computed once per request, on first use (a variable read by
// `return` in the rewrite phase, or the header filter), cached in the request
// context so every phase sees the same answer. The click event is recorded
// at that moment.
#include <string_view>

#include "core/attribution.h"
#include "core/code.h"
#include "core/event.h"
#include "core/random.h"
#include "referral_compat.h"
#include "referral_events.h"
#include "referral_module.h"

namespace referral_ngx {
namespace {

ngx_str_t copy(ngx_pool_t* pool, std::string_view s) {
    ngx_str_t out = ngx_null_string;
    if (s.empty()) return out;
    out.data = static_cast<u_char*>(ngx_pnalloc(pool, s.size()));
    if (out.data == nullptr) return out;
    ngx_memcpy(out.data, s.data(), s.size());
    out.len = s.size();
    return out;
}

// Builds "name=value<attrs>[; Secure]" for Set-Cookie.
bool make_set_cookie(ngx_http_request_t* r, const LocConf* lcf, RequestCtx* ctx,
                     std::string_view code) {
    const auto* keys = static_cast<const referral::Key*>(lcf->keys->elts);
    char value[referral::kCookieMaxLen];
    size_t vlen = referral::sign_cookie(code, std::string_view(reinterpret_cast<char*>(ctx->visitor), 32),
                                        ctx->first_ts_ms, keys[0], value, sizeof(value));
    if (vlen == 0) return false;
    bool add_secure = false;
#if (NGX_HTTP_SSL)
    add_secure = r->connection->ssl != nullptr && !(lcf->cookie_flags & flag_secure);
#endif
    size_t len = lcf->cookie_name.len + 1 + vlen + lcf->cookie_attrs.len + (add_secure ? 8 : 0);
    u_char* p = static_cast<u_char*>(ngx_pnalloc(r->pool, len));
    if (p == nullptr) return false;
    ctx->set_cookie.data = p;
    p = ngx_cpymem(p, lcf->cookie_name.data, lcf->cookie_name.len);
    *p++ = '=';
    p = ngx_cpymem(p, value, vlen);
    p = ngx_cpymem(p, lcf->cookie_attrs.data, lcf->cookie_attrs.len);
    if (add_secure) p = ngx_cpymem(p, "; Secure", 8);
    ctx->set_cookie.len = p - ctx->set_cookie.data;
    return true;
}

// Reads what the request carries, lets referral::decide() rule, and acts on
// the decision: copies, the visitor id, the cookie, the click.
void compute(ngx_http_request_t* r, const LocConf* lcf, RequestCtx* ctx) {
    // Not cached where referral is off: a variable read with the server's
    // configuration must not decide for the location that has it on.
    if (!lcf->enable || lcf->keys == nullptr) return;
    ctx->computed = true;

    // referral_skip: nothing is read, set or recorded.
    const bool skip = lcf->skip != nullptr && ngx_http_test_predicates(r, lcf->skip) == NGX_DECLINED;
    if (skip) {
        count(&Counters::skipped);
        ctx->status = referral::decide(true, referral::CodeSeen::absent, referral::CookieSeen::absent,
                                       referral::AttributionMode::first).status;
        return;
    }

    const std::int64_t now = now_ms();
    const std::int64_t window_ms = static_cast<std::int64_t>(lcf->window) * 1000;

    ngx_str_t carried = ngx_null_string;
    referral::CodeSeen code_seen = referral::CodeSeen::absent;
    ngx_int_t rc = lcf->code_is_arg_ref
                       ? ngx_http_arg(r, reinterpret_cast<u_char*>(const_cast<char*>("ref")), 3, &carried)
                       : ngx_http_complex_value(r, lcf->code, &carried);
    if (rc == NGX_OK && carried.len > 0) {
        code_seen = referral::is_valid_code(view(carried)) ? referral::CodeSeen::valid
                                                           : referral::CodeSeen::invalid;
        if (code_seen == referral::CodeSeen::invalid) count(&Counters::invalid_codes);
    }

    const auto* keys = static_cast<const referral::Key*>(lcf->keys->elts);
    referral::CookieScan scan(keys, lcf->keys->nelts, now, window_ms);
    for_each_cookie_header(r, [&](std::string_view header) {
        return referral::for_each_cookie(header, view(lcf->cookie_name),
                                         [&](std::string_view value) { return scan.offer(value); });
    });
    const referral::CookieSeen cookie_seen = scan.result();
    if (cookie_seen == referral::CookieSeen::rejected) {
        count(&Counters::rejected_cookies);
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "referral: ignored cookie \"%V\": %s",
                      &lcf->cookie_name, referral::to_string(scan.why_rejected()));
    }

    const auto mode = static_cast<Attribution>(lcf->attribution) == Attribution::first
                          ? referral::AttributionMode::first
                          : referral::AttributionMode::last;
    const referral::Decision d = referral::decide(false, code_seen, cookie_seen, mode);
    const referral::CookieClaims& claims = scan.claims();
    using referral::Source;

    if (d.visitor == Source::request) {
        if (!referral::random_id(reinterpret_cast<char*>(ctx->visitor))) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "referral: RAND_bytes() failed");
            return;
        }
    } else if (d.visitor == Source::cookie) {
        ngx_memcpy(ctx->visitor, claims.visitor.data(), 32);
    }
    ctx->has_visitor = d.visitor != Source::nothing;
    ctx->status = d.status;
    if (d.first_ts != Source::nothing) {
        ctx->first_ts_ms = d.first_ts == Source::request ? now : claims.first_ts_ms;
    }
    if (d.code != Source::nothing) {
        ctx->code = copy(r->pool, d.code == Source::request ? view(carried) : claims.code);
    }
    if (d.set_cookie && !make_set_cookie(r, lcf, ctx, view(carried))) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "referral: cannot sign cookie");
    }
    // The click carries the code of the link followed, whoever holds the
    // attribution.
    if (d.click) record_event(r, "click", ctx, view(carried), nullptr, now);
}

ngx_int_t get_variable(ngx_http_request_t* r, ngx_http_variable_value_t* v, uintptr_t data) noexcept {
    RequestCtx* ctx = attribution(r);
    if (ctx == nullptr) {
        v->not_found = 1;
        return NGX_OK;
    }
    ngx_str_t value = ngx_null_string;
    switch (data) {
        case 0:
            value = ctx->code;
            break;
        case 1:
            if (ctx->has_visitor) {
                value.data = ctx->visitor;
                value.len = 32;
            }
            break;
        case 2: {
            const char* name = referral::to_string(ctx->status);
            value.data = reinterpret_cast<u_char*>(const_cast<char*>(name));
            value.len = ngx_strlen(name);
            break;
        }
    }
    v->len = value.len;
    v->data = value.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    return NGX_OK;
}

ngx_http_variable_t variables[] = {
    {ngx_string("referral_code"), nullptr, get_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("referral_visitor"), nullptr, get_variable, 1, NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("referral_status"), nullptr, get_variable, 2, NGX_HTTP_VAR_NOCACHEABLE, 0},
};

}  // namespace

std::int64_t now_ms() noexcept {
    ngx_time_t* tp = ngx_timeofday();
    return static_cast<std::int64_t>(tp->sec) * 1000 + tp->msec;
}

namespace {

void ctx_cleanup(void*) noexcept {}

// An internal redirect clears module contexts; the context is also hung on a
// pool cleanup (as the realip module does) so the attribution, and its click
// event, survive it and happen once per request.
RequestCtx* find_ctx(ngx_http_request_t* r) {
    auto* ctx = static_cast<RequestCtx*>(ngx_http_get_module_ctx(r, ngx_http_referral_module));
    if (ctx != nullptr || !(r->internal || r->filter_finalize)) return ctx;
    for (ngx_pool_cleanup_t* cln = r->pool->cleanup; cln != nullptr; cln = cln->next) {
        if (cln->handler == ctx_cleanup) {
            ctx = static_cast<RequestCtx*>(cln->data);
            ngx_http_set_ctx(r, ctx, ngx_http_referral_module);
            return ctx;
        }
    }
    return nullptr;
}

}  // namespace

RequestCtx* existing_attribution(ngx_http_request_t* r) noexcept {
    RequestCtx* ctx = find_ctx(r->main);
    return ctx != nullptr && ctx->computed ? ctx : nullptr;
}

RequestCtx* attribution(ngx_http_request_t* r) noexcept {
    // Subrequests share the main request's attribution.
    ngx_http_request_t* main = r->main;
    RequestCtx* ctx = find_ctx(main);
    if (ctx != nullptr && ctx->computed) return ctx;
    if (ctx == nullptr) {
        ctx = static_cast<RequestCtx*>(ngx_pcalloc(main->pool, sizeof(RequestCtx)));
        if (ctx == nullptr) return nullptr;
        ngx_http_set_ctx(main, ctx, ngx_http_referral_module);
    }
    auto* lcf = static_cast<LocConf*>(ngx_http_get_module_loc_conf(main, ngx_http_referral_module));
    try {
        compute(main, lcf, ctx);
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "referral: attribution failed: %s",
                      exception_message());
    }
    if (ctx->status != referral::AttributionStatus::none) {
        // Only an attribution worth keeping (a click may have been
        // recorded) is hung on the pool for internal redirects to find.
        ngx_pool_cleanup_t* cln = ngx_pool_cleanup_add(main->pool, 0);
        if (cln != nullptr) {
            cln->handler = ctx_cleanup;
            cln->data = ctx;
        }
    }
    return ctx;
}

ngx_int_t add_variables(ngx_conf_t* cf) noexcept {
    for (ngx_http_variable_t& v : variables) {
        ngx_http_variable_t* var = ngx_http_add_variable(cf, &v.name, v.flags);
        if (var == nullptr) return NGX_ERROR;
        var->get_handler = v.get_handler;
        var->data = v.data;
    }
    return NGX_OK;
}

}  // namespace referral_ngx
