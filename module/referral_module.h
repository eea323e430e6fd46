// Declarations shared by the module's files. nginx's headers are C: they are
// included here, inside extern "C", and nowhere else.
#pragma once

extern "C" {
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
}

#include <cstdint>
#include <exception>
#include <string_view>

#include "core/attribution.h"
#include "core/cookie.h"
#include "core/status.h"

extern "C" {
extern ngx_module_t ngx_http_referral_module;
}

namespace referral_ngx {

// For the log line of an exception barrier: the message of the exception
// being handled. Only inside a catch block; the text lives as long as it.
inline const char* exception_message() noexcept {
    try {
        throw;
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "an exception that is not a std::exception";
    }
}

inline std::string_view view(const ngx_str_t& s) noexcept {
    return std::string_view(reinterpret_cast<const char*>(s.data), s.len);
}

enum class Attribution : ngx_uint_t { first = 0, last = 1 };

// referral_cookie_flags, an ngx_conf_bitmask_t set: bit 0x01 is
// NGX_CONF_BITMASK_SET (the directive was given), as in the userid module.
enum CookieFlag : ngx_uint_t {
    flag_off = 0x02,
    flag_secure = 0x04,
    flag_httponly = 0x08,
    flag_samesite_strict = 0x10,
    flag_samesite_lax = 0x20,
    flag_samesite_none = 0x40,
};

struct RedisAddr {
    ngx_str_t host;  // numeric, NUL-terminated
    ngx_int_t port;
};

struct MainConf {
    ngx_str_t redis_host;      // empty for a unix socket
    ngx_int_t redis_port;
    ngx_str_t redis_unix;      // "unix:" path, NUL-terminated
    ngx_str_t redis_password;  // empty when none; never logged
    ngx_int_t redis_db;        // -1: no SELECT
    ngx_int_t redis_replicas;  // replicas=N: 0, or WAIT N before an event counts as sent
    ngx_flag_t redis_set;
    ngx_array_t* sentinels;    // RedisAddr; null unless sentinel=NAME
    ngx_str_t sentinel_name;   // sentinel=NAME, or empty
    ngx_str_t stream;
    size_t buffer;
    ngx_str_t spool;           // empty: no spool
    size_t spool_max;          // referral_spool max_size=, bytes
    ngx_shm_zone_t* counters_zone;
};

struct LocConf {
    ngx_flag_t enable;
    u_char* enable_file;        // where `referral on` was set, for messages
    ngx_uint_t enable_line;     //   about what it requires (as ssl's listen)
    ngx_array_t* skip;          // referral_skip predicates, or null
    ngx_http_complex_value_t* code;
    bool code_is_arg_ref;       // the default, read without the script engine
    ngx_array_t* keys;          // referral::Key, first one signs
    ngx_str_t cookie_name;
    ngx_str_t cookie_domain;
    ngx_str_t cookie_path;
    ngx_uint_t cookie_flags;
    time_t window;
    ngx_uint_t attribution;
    ngx_str_t conversion_header;  // empty: "off"
    ngx_str_t cookie_attrs;       // "; Max-Age=..; Path=..; ..", rendered once
    ngx_int_t ip_mask_v4;         // referral_ip_mask bits, or kIpMaskOff
    ngx_int_t ip_mask_v6;
};

// referral_ip_mask off (the default): events carry the address unmasked.
constexpr ngx_int_t kIpMaskOff = -2;  // NGX_CONF_UNSET (-1) is "not set here"


// What this request is attributed to; computed once, on first use.
struct RequestCtx {
    bool computed;
    referral::AttributionStatus status;  // zero (pcalloc): none
    ngx_str_t code;             // the code holding the attribution, or empty
    u_char visitor[32];         // 32 lowercase hex when has_visitor
    bool has_visitor;
    std::int64_t first_ts_ms;   // 0 when there is no attribution
    ngx_str_t set_cookie;       // complete Set-Cookie value, or empty
};

// One worker process's figures, in its slot of the shared memory zone
// (referral_status.cpp). All counters but `buffered`, a gauge.
struct Counters {
    ngx_atomic_t sent;
    ngx_atomic_t buffered;
    ngx_atomic_t spooled;
    ngx_atomic_t replayed;
    ngx_atomic_t dropped;
    ngx_atomic_t clicks;
    ngx_atomic_t invalid_codes;
    ngx_atomic_t rejected_cookies;
    ngx_atomic_t conversions;
    ngx_atomic_t malformed_conversions;
    ngx_atomic_t skipped;
};

// referral_conf.cpp
extern ngx_command_t commands[];
void* create_main_conf(ngx_conf_t* cf) noexcept;
char* init_main_conf(ngx_conf_t* cf, void* conf) noexcept;
void* create_loc_conf(ngx_conf_t* cf) noexcept;
char* merge_loc_conf(ngx_conf_t* cf, void* parent, void* child) noexcept;

// referral_attribution.cpp
RequestCtx* attribution(ngx_http_request_t* r) noexcept;
// The attribution if one was computed for this request, without computing.
RequestCtx* existing_attribution(ngx_http_request_t* r) noexcept;
ngx_int_t add_variables(ngx_conf_t* cf) noexcept;
std::int64_t now_ms() noexcept;

// referral_filter.cpp
ngx_int_t init_filter(ngx_conf_t* cf) noexcept;

// referral_status.cpp
extern Counters* counters;  // this process's slot; null until it has one
ngx_int_t add_counters_zone(ngx_conf_t* cf, MainConf* mcf) noexcept;
void claim_counters_slot(ngx_log_t* log) noexcept;  // init_process
void release_counters_slot() noexcept;              // exit_process
void publish_redis_state(referral::RedisState state) noexcept;
char* status_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
inline void count(ngx_atomic_t Counters::*field, ngx_atomic_int_t n = 1) noexcept {
    if (counters != nullptr) (void)ngx_atomic_fetch_add(&(counters->*field), n);
}

// referral_delivery.cpp: the per-worker path of events to Redis.
ngx_int_t delivery_init_process(ngx_cycle_t* cycle) noexcept;
void delivery_exit_process(ngx_cycle_t* cycle) noexcept;
// Takes a complete RESP XADD; never blocks, never fails the request.
void deliver(ngx_log_t* log, const char* command, size_t len) noexcept;

}  // namespace referral_ngx
