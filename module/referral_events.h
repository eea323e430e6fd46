// Turning a request's facts into a schema-1 event for Redis.
#pragma once
#include <cstdint>
#include <string_view>

#include "core/conversion.h"
#include "referral_module.h"

namespace referral_ngx {

// Encodes one event (click when `conversion` is null) with the request's
// ip, ua, url, referer and host, and hands it to the delivery path.
// `code` is the code the event carries; the visitor and first_ts come from
// the request's attribution.
void record_event(ngx_http_request_t* r, const char* type, const RequestCtx* ctx,
                  std::string_view code, const referral::Conversion* conversion,
                  std::int64_t ts_ms) noexcept;

}  // namespace referral_ngx
