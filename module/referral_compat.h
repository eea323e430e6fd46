// The one seam between nginx versions. nginx 1.23.0 changed the request API:
// request headers that may repeat (Cookie) became a linked list through
// ngx_table_elt_t::next (r->headers_in.cookie) instead of an array of
// pointers (r->headers_in.cookies), and every header added to a response
// must set `next` (nginx follows it when it joins repeated headers). Every
// other file goes through these helpers; no other `nginx_version` test.
#pragma once

#include "referral_module.h"

namespace referral_ngx {

// Calls f(value) for each Cookie request header, in order, until f returns
// true; returns whether it did. Each header is handed over whole: a browser
// may hold several cookies of our name (other Domain or Path) and the caller
// looks at all of them, which ngx_http_parse_multi_header_lines() (first
// match only) would not.
template <typename F>
bool for_each_cookie_header(ngx_http_request_t* r, F&& f) {
#if (nginx_version >= 1023000)
    for (ngx_table_elt_t* h = r->headers_in.cookie; h != nullptr; h = h->next) {
        if (f(view(h->value))) return true;
    }
#else
    auto** h = static_cast<ngx_table_elt_t**>(r->headers_in.cookies.elts);
    for (ngx_uint_t i = 0; i < r->headers_in.cookies.nelts; i++) {
        if (f(view(h[i]->value))) return true;
    }
#endif
    return false;
}

// Appends a response header; false when out of memory.
inline bool add_response_header(ngx_http_request_t* r, ngx_str_t key, ngx_str_t value) noexcept {
    auto* h = static_cast<ngx_table_elt_t*>(ngx_list_push(&r->headers_out.headers));
    if (h == nullptr) return false;
    h->hash = 1;
    h->key = key;
    h->value = value;
    h->lowcase_key = nullptr;
#if (nginx_version >= 1023000)
    h->next = nullptr;
#endif
    return true;
}

}  // namespace referral_ngx
