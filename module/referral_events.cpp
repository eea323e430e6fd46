#include "referral_events.h"

#include "core/event.h"
#include "core/ipmask.h"
#include "core/random.h"

namespace referral_ngx {
namespace {

std::string_view header_value(const ngx_table_elt_t* h) {
    if (h == nullptr) return {};
    return std::string_view(reinterpret_cast<const char*>(h->value.data), h->value.len);
}

}  // namespace

void record_event(ngx_http_request_t* r, const char* type, const RequestCtx* ctx,
                  std::string_view code, const referral::Conversion* conversion,
                  std::int64_t ts_ms) noexcept {
    auto* mcf = static_cast<MainConf*>(ngx_http_get_module_main_conf(r, ngx_http_referral_module));
    char id[referral::kIdLen];
    if (!referral::time_ordered_id(ts_ms, id)) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "referral: RAND_bytes() failed, event dropped");
        count(&Counters::dropped);
        return;
    }
    referral::Event e;
    e.id = std::string_view(id, sizeof(id));
    e.type = type;
    e.ts_ms = ts_ms;
    e.code = code;
    if (ctx->has_visitor) e.visitor = std::string_view(reinterpret_cast<const char*>(ctx->visitor), 32);
    e.first_ts_ms = ctx->has_visitor ? ctx->first_ts_ms : 0;
    // referral_ip_mask: masked here, before the event exists, so neither
    // Redis nor the spool ever holds the full address. Text that is not an
    // address gives an empty ip, never the unmasked text.
    auto* lcf = static_cast<LocConf*>(ngx_http_get_module_loc_conf(r, ngx_http_referral_module));
    char masked[referral::kMaskedIpMaxLen];
    if (lcf->ip_mask_v4 == kIpMaskOff) {
        e.ip = view(r->connection->addr_text);
    } else {
        e.ip = std::string_view(masked, referral::mask_ip(view(r->connection->addr_text),
                                                          static_cast<unsigned>(lcf->ip_mask_v4),
                                                          static_cast<unsigned>(lcf->ip_mask_v6), masked));
    }
    e.ua = header_value(r->headers_in.user_agent);
    e.url = view(r->unparsed_uri);
    e.referer = header_value(r->headers_in.referer);
    e.host = header_value(r->headers_in.host);
    e.conversion = conversion;

    std::string_view stream = view(mcf->stream);
    const referral::Xadd xadd(stream, e);
    char* buf = static_cast<char*>(ngx_pnalloc(r->pool, xadd.size()));
    if (buf == nullptr) {
        count(&Counters::dropped);
        return;
    }
    size_t len = xadd.encode(buf);
    if (conversion == nullptr) count(&Counters::clicks);
    deliver(r->connection->log, buf, len);
}

}  // namespace referral_ngx
