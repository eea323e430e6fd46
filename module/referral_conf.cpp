// Directives, configuration structures and their merge. nginx's own slots
// parse (flag, enum, bitmask, size, sec, str, predicates); each value is
// checked by the directive's post handler, so `nginx -t` names the line at
// fault, in nginx's wording; merge functions only fill in defaults, render
// the static cookie attributes once, and check what `referral on` needs.
// Key files are read here, in the master, before workers drop privileges.
#include <new>

#include "core/hmac.h"
#include "core/ipmask.h"
#include "referral_module.h"

namespace referral_ngx {
namespace {

constexpr size_t kMaxKeyFileLen = 4096;
constexpr time_t kDefaultWindow = 30 * 24 * 3600;
constexpr time_t kMaxWindow = 3650 * 24 * 3600;  // keeps window * 1000 far from overflow

const char* const kBadValue = "invalid value \"%V\" in \"%V\" directive, %s";

// The usual nginx message for a value that parsed but is out of bounds.
char* bad_value(ngx_conf_t* cf, const char* must) {
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, kBadValue, &value[cf->args->nelts - 1], &value[0], must);
    return static_cast<char*>(NGX_CONF_ERROR);
}

void free_prepared_key(void* data) noexcept {
    delete static_cast<referral::HmacSha256*>(data);
}

// Reads the whole key file now, in the master, with the system call's own
// message on failure (as nginx words ssl_certificate's).
char* set_secret(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    if (lcf->keys == NGX_CONF_UNSET_PTR) {
        lcf->keys = ngx_array_create(cf->pool, 2, sizeof(referral::Key));
        if (lcf->keys == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
    }
    ngx_str_t name = value[1];
    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) return static_cast<char*>(NGX_CONF_ERROR);

    ngx_file_t file;
    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = name;
    file.log = cf->log;
    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, ngx_open_file_n " \"%s\" failed", name.data);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    char* rv = static_cast<char*>(NGX_CONF_ERROR);
    ngx_file_info_t fi;
    u_char* buf = nullptr;
    ssize_t n = 0;
    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, ngx_fd_info_n " \"%s\" failed", name.data);
        goto done;
    }
    if (ngx_file_size(&fi) < static_cast<off_t>(referral::kMinKeyLen) ||
        ngx_file_size(&fi) > static_cast<off_t>(kMaxKeyFileLen)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%s\" in \"referral_secret\" directive has %O bytes, "
                           "it must have %uz to %uz",
                           name.data, ngx_file_size(&fi), referral::kMinKeyLen, kMaxKeyFileLen);
        goto done;
    }
    buf = static_cast<u_char*>(ngx_pnalloc(cf->pool, ngx_file_size(&fi)));
    if (buf == nullptr) goto done;
    n = ngx_read_file(&file, buf, ngx_file_size(&fi), 0);
    if (n != ngx_file_size(&fi)) {
        if (n != NGX_ERROR) {  // ngx_read_file() logged its own error
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, ngx_read_file_n " \"%s\" returned only %z bytes",
                               name.data, n);
        }
        goto done;
    }
    {
        auto* k = static_cast<referral::Key*>(ngx_array_push(lcf->keys));
        ngx_pool_cleanup_t* cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (k == nullptr || cln == nullptr) goto done;
        k->data = buf;
        k->len = static_cast<size_t>(n);
        k->prepared = nullptr;
        try {
            k->prepared = new referral::HmacSha256(buf, k->len);
        } catch (...) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "cannot set up HMAC-SHA256 for \"%s\": %s",
                               name.data, exception_message());
            goto done;
        }
        // The key schedule lives as long as the configuration that owns it.
        cln->handler = free_prepared_key;
        cln->data = const_cast<referral::HmacSha256*>(k->prepared);
    }
    rv = NGX_CONF_OK;
done:
    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno, ngx_close_file_n " \"%s\" failed", name.data);
    }
    return rv;
}

// host:port, resolved here, once, as upstream servers are: hiredis would call
// getaddrinfo() on every reconnect, a blocking lookup in a worker.
bool parse_tcp(ngx_conf_t* cf, const ngx_str_t& addr, const ngx_str_t& directive, RedisAddr* out) {
    ngx_url_t u;
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = addr;
    u.no_resolve = 0;
    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0 || u.no_port) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive%s%s, "
                           "it must be host:port or unix:/path", &addr, &directive,
                           u.err ? ": " : "", u.err ? u.err : "");
        return false;
    }
    u_char text[NGX_SOCKADDR_STRLEN + 1];
    size_t len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, text,
                               NGX_SOCKADDR_STRLEN, 0);
    // ngx_sock_ntop() writes an IPv6 address without brackets when no
    // port is asked for, which is what hiredis takes.
    out->host.data = static_cast<u_char*>(ngx_pnalloc(cf->pool, len + 1));
    if (out->host.data == nullptr) return false;
    ngx_cpystrn(out->host.data, text, len + 1);
    out->host.len = len;
    out->port = u.port;
    return true;
}

// referral_redis ADDRESS... [password=P] [db=N] [replicas=N] [sentinel=NAME]
char* set_redis(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* mcf = static_cast<MainConf*>(conf);
    if (mcf->redis_set) return const_cast<char*>("is duplicate");
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    ngx_array_t* addrs = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
    if (addrs == nullptr) return static_cast<char*>(NGX_CONF_ERROR);

    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "password=", 9) == 0 && value[i].len > 9) {
            if (mcf->redis_password.len > 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate \"password\" in \"referral_redis\" directive");
                return static_cast<char*>(NGX_CONF_ERROR);
            }
            mcf->redis_password.data = value[i].data + 9;
            mcf->redis_password.len = value[i].len - 9;
        } else if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            mcf->redis_db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (mcf->redis_db == NGX_ERROR || mcf->redis_db > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, kBadValue, &value[i], &value[0],
                                   "it must be db=N");
                return static_cast<char*>(NGX_CONF_ERROR);
            }
        } else if (ngx_strncmp(value[i].data, "replicas=", 9) == 0) {
            mcf->redis_replicas = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (mcf->redis_replicas == NGX_ERROR || mcf->redis_replicas < 1 || mcf->redis_replicas > 100) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, kBadValue, &value[i], &value[0],
                                   "it must be replicas=N, 1 to 100");
                return static_cast<char*>(NGX_CONF_ERROR);
            }
        } else if (ngx_strncmp(value[i].data, "sentinel=", 9) == 0) {
            // A Sentinel master name: printable, no spaces, as Redis takes it.
            bool ok = value[i].len > 9 && value[i].len <= 9 + 256;
            for (size_t k = 9; ok && k < value[i].len; k++) ok = value[i].data[k] > 0x20 && value[i].data[k] < 0x7f;
            if (!ok) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, kBadValue, &value[i], &value[0],
                                   "it must be sentinel=NAME");
                return static_cast<char*>(NGX_CONF_ERROR);
            }
            mcf->sentinel_name.data = value[i].data + 9;
            mcf->sentinel_name.len = value[i].len - 9;
        } else if (ngx_strlchr(value[i].data, value[i].data + value[i].len, '=') != nullptr &&
                   ngx_strncmp(value[i].data, "unix:", 5) != 0) {
            // Never echo a parameter back: it may be a mistyped password.
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter #%ui in \"referral_redis\" directive, "
                               "it must be password=P, db=N, replicas=N or sentinel=NAME", i);
            return static_cast<char*>(NGX_CONF_ERROR);
        } else {
            auto* a = static_cast<ngx_str_t*>(ngx_array_push(addrs));
            if (a == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
            *a = value[i];
        }
    }
    auto* addr = static_cast<ngx_str_t*>(addrs->elts);
    if (mcf->sentinel_name.len > 0) {
        // The addresses are Sentinels, asked in order on every connect.
        if (addrs->nelts == 0 || addrs->nelts > 16) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"referral_redis\" directive with sentinel= takes 1 to 16 Sentinel addresses");
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        mcf->sentinels = ngx_array_create(cf->pool, addrs->nelts, sizeof(RedisAddr));
        if (mcf->sentinels == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
        for (ngx_uint_t i = 0; i < addrs->nelts; i++) {
            if (addr[i].len > 5 && ngx_strncmp(addr[i].data, "unix:", 5) == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, kBadValue, &addr[i], &value[0],
                                   "a Sentinel must be host:port");
                return static_cast<char*>(NGX_CONF_ERROR);
            }
            auto* sa = static_cast<RedisAddr*>(ngx_array_push(mcf->sentinels));
            if (sa == nullptr || !parse_tcp(cf, addr[i], value[0], sa)) return static_cast<char*>(NGX_CONF_ERROR);
        }
        mcf->redis_set = 1;
        return NGX_CONF_OK;
    }
    if (addrs->nelts != 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"referral_redis\" directive takes one address, or Sentinels with sentinel=NAME");
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (addr[0].len > 5 && ngx_strncmp(addr[0].data, "unix:", 5) == 0) {
        mcf->redis_unix.len = addr[0].len - 5;
        mcf->redis_unix.data = static_cast<u_char*>(ngx_pnalloc(cf->pool, addr[0].len - 4));
        if (mcf->redis_unix.data == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
        ngx_cpystrn(mcf->redis_unix.data, addr[0].data + 5, addr[0].len - 4);
    } else {
        RedisAddr a;
        if (!parse_tcp(cf, addr[0], value[0], &a)) return static_cast<char*>(NGX_CONF_ERROR);
        mcf->redis_host = a.host;
        mcf->redis_port = a.port;
    }
    mcf->redis_set = 1;
    return NGX_CONF_OK;
}

ngx_conf_bitmask_t cookie_flags[] = {
    {ngx_string("off"), flag_off},
    {ngx_string("secure"), flag_secure},
    {ngx_string("httponly"), flag_httponly},
    {ngx_string("samesite=strict"), flag_samesite_strict},
    {ngx_string("samesite=lax"), flag_samesite_lax},
    {ngx_string("samesite=none"), flag_samesite_none},
    {ngx_null_string, 0},
};

// nginx's bitmask slot parses; what it cannot express (one samesite at
// most, "off" alone) is checked here, on the directive's own line.
char* set_cookie_flags(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->cookie_flags != 0) return const_cast<char*>("is duplicate");
    char* rv = ngx_conf_set_bitmask_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) return rv;
    const ngx_uint_t samesite = flag_samesite_strict | flag_samesite_lax | flag_samesite_none;
    const ngx_uint_t f = lcf->cookie_flags;
    if ((f & flag_off) && cf->args->nelts > 2) {
        return bad_value(cf, "\"off\" cannot be combined with other flags");
    }
    if ((f & samesite) != 0 && ((f & samesite) & ((f & samesite) - 1)) != 0) {
        return bad_value(cf, "only one samesite= value is allowed");
    }
    if ((f & flag_samesite_none) && !(f & flag_secure)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"referral_cookie_flags samesite=none\" without \"secure\": browsers "
                           "refuse such a cookie on plain http (https adds Secure anyway)");
    }
    return NGX_CONF_OK;
}

ngx_conf_enum_t attributions[] = {
    {ngx_string("first"), static_cast<ngx_uint_t>(Attribution::first)},
    {ngx_string("last"), static_cast<ngx_uint_t>(Attribution::last)},
    {ngx_null_string, 0},
};

// `referral on|off`, remembering where it was turned on: what it requires
// (a secret, a Redis) is only known at merge time, and the message points
// here rather than at the end of the http block.
char* set_enable(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    char* rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) return rv;
    auto* lcf = static_cast<LocConf*>(conf);
    lcf->enable_file = cf->conf_file->file.name.data;
    lcf->enable_line = cf->conf_file->line;
    return NGX_CONF_OK;
}

// A bit count of referral_ip_mask: 0 (nothing kept) up to `max`.
bool parse_bits(ngx_conf_t* cf, ngx_uint_t i, ngx_int_t max, ngx_int_t* bits) {
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    *bits = ngx_atoi(value[i].data, value[i].len);  // NGX_ERROR for "", "-1", "24x"
    if (*bits != NGX_ERROR && *bits <= max) return true;
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" in \"%V\" directive, it must be %s",
                       &value[i], &value[0],
                       i == 1 ? "a number of bits from 0 to 32, or \"off\"" : "a number of bits from 0 to 128");
    return false;
}

// `referral_ip_mask V4BITS [V6BITS]` or `off`, so an inner level can send
// full addresses again (and only a level that says so).
char* set_ip_mask(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->ip_mask_v4 != NGX_CONF_UNSET) return const_cast<char*>("is duplicate");
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    if (cf->args->nelts == 2 && value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        lcf->ip_mask_v4 = kIpMaskOff;
        lcf->ip_mask_v6 = kIpMaskOff;
        return NGX_CONF_OK;
    }
    ngx_int_t v4 = 0, v6 = referral::kDefaultIpv6MaskBits;
    if (!parse_bits(cf, 1, referral::kIpv4Bits, &v4)) return static_cast<char*>(NGX_CONF_ERROR);
    if (cf->args->nelts == 3 && !parse_bits(cf, 2, referral::kIpv6Bits, &v6)) {
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    lcf->ip_mask_v4 = v4;
    lcf->ip_mask_v6 = v6;
    return NGX_CONF_OK;
}

// ------------------------------------------- post handlers: value checks

bool is_cookie_token(const ngx_str_t& s) {
    // RFC 6265 token: no separators, controls or spaces.
    if (s.len == 0 || s.len > 64) return false;
    for (size_t i = 0; i < s.len; i++) {
        u_char c = s.data[i];
        if (c <= 0x20 || c >= 0x7f || ngx_strchr("()<>@,;:\\\"/[]?={}", c) != nullptr) return false;
    }
    return true;
}

bool is_attr_value(const ngx_str_t& s) {
    if (s.len == 0 || s.len > 255) return false;
    for (size_t i = 0; i < s.len; i++) {
        u_char c = s.data[i];
        if (c <= 0x20 || c >= 0x7f || c == ';' || c == ',') return false;
    }
    return true;
}

char* check_cookie_name(ngx_conf_t* cf, void*, void* data) noexcept {
    if (is_cookie_token(*static_cast<ngx_str_t*>(data))) return NGX_CONF_OK;
    return bad_value(cf, "it must be a cookie name of 1 to 64 token characters");
}

char* check_cookie_domain(ngx_conf_t* cf, void*, void* data) noexcept {
    if (is_attr_value(*static_cast<ngx_str_t*>(data))) return NGX_CONF_OK;
    return bad_value(cf, "it must be 1 to 255 characters without spaces, \";\" or \",\"");
}

char* check_cookie_path(ngx_conf_t* cf, void*, void* data) noexcept {
    auto* path = static_cast<ngx_str_t*>(data);
    if (is_attr_value(*path) && path->data[0] == '/') return NGX_CONF_OK;
    return bad_value(cf, "it must start with \"/\" and have no spaces, \";\" or \",\"");
}

char* check_window(ngx_conf_t* cf, void*, void* data) noexcept {
    time_t w = *static_cast<time_t*>(data);
    if (w > 0 && w <= kMaxWindow) return NGX_CONF_OK;
    return bad_value(cf, "it must be more than 0 and at most 3650d");
}

char* check_conversion_header(ngx_conf_t* cf, void*, void* data) noexcept {
    auto* name = static_cast<ngx_str_t*>(data);
    if (name->len == 3 && ngx_strncmp(name->data, "off", 3) == 0) {
        name->len = 0;  // data stays non-null: set here, to nothing
        return NGX_CONF_OK;
    }
    bool ok = name->len > 0 && name->len <= 64;
    for (size_t i = 0; ok && i < name->len; i++) {
        u_char c = name->data[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_';
    }
    if (ok) return NGX_CONF_OK;
    return bad_value(cf, "it must be a header name or \"off\"");
}

char* check_stream(ngx_conf_t* cf, void*, void* data) noexcept {
    size_t len = static_cast<ngx_str_t*>(data)->len;
    if (len > 0 && len <= 256) return NGX_CONF_OK;
    return bad_value(cf, "it must be a key of 1 to 256 bytes");
}

char* check_buffer(ngx_conf_t* cf, void*, void* data) noexcept {
    if (*static_cast<size_t*>(data) >= 64 * 1024) return NGX_CONF_OK;
    return bad_value(cf, "it must be at least 64k");
}

// The spool directory is created by the master when the workers start
// (init_module); checked now so that a bad path fails `nginx -t`, and a
// reload, on this line.
char* check_spool(ngx_conf_t* cf, void*, void* data) noexcept {
    auto* spool = static_cast<ngx_str_t*>(data);
    if (spool->len == 3 && ngx_strncmp(spool->data, "off", 3) == 0) {
        spool->len = 0;
        return NGX_CONF_OK;
    }
    if (ngx_conf_full_name(cf->cycle, spool, 0) != NGX_OK) return static_cast<char*>(NGX_CONF_ERROR);
    // NUL-terminated for the POSIX calls in the spool.
    u_char* p = static_cast<u_char*>(ngx_pnalloc(cf->pool, spool->len + 1));
    if (p == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
    ngx_cpystrn(p, spool->data, spool->len + 1);
    spool->data = p;
    ngx_file_info_t fi;
    if (ngx_file_info(p, &fi) != NGX_FILE_ERROR) {
        if (ngx_is_dir(&fi)) return NGX_CONF_OK;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%s\" in \"referral_spool\" directive is not a directory", p);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    // Absent: its parent must be a directory to create it in.
    u_char parent[NGX_MAX_PATH];
    size_t n = spool->len;
    while (n > 1 && p[n - 1] != '/') n--;
    if (n > 1) n--;  // drop the slash, but keep "/" itself
    if (n >= sizeof(parent)) return bad_value(cf, "the path is too long");
    ngx_cpystrn(parent, p, n + 1);
    if (ngx_file_info(parent, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, ngx_file_info_n " \"%s\" failed", parent);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (!ngx_is_dir(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" in \"referral_spool\" directive cannot be created: \"%s\" is not a directory",
                           p, parent);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    return NGX_CONF_OK;
}

// referral_spool DIR [max_size=SIZE]
char* set_spool(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* mcf = static_cast<MainConf*>(conf);
    if (mcf->spool.data != nullptr) return const_cast<char*>("is duplicate");
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    for (ngx_uint_t i = 2; i < cf->args->nelts; i++) {
        if (value[i].len < 9 || ngx_strncmp(value[i].data, "max_size=", 9) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\" in \"%V\" directive, "
                               "it must be max_size=SIZE", &value[i], &value[0]);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        // ngx_parse_offset, as client_max_body_size: "1g" is a size too.
        ngx_str_t size = {value[i].len - 9, value[i].data + 9};
        off_t n = ngx_parse_offset(&size);
        if (n == NGX_ERROR || n < 64 * 1024) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, kBadValue, &value[i], &value[0],
                               "it must be max_size=SIZE of at least 64k");
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        mcf->spool_max = static_cast<size_t>(n);
    }
    mcf->spool = value[1];
    return check_spool(cf, nullptr, &mcf->spool);
}

ngx_conf_post_t post_cookie_name = {check_cookie_name};
ngx_conf_post_t post_cookie_domain = {check_cookie_domain};
ngx_conf_post_t post_cookie_path = {check_cookie_path};
ngx_conf_post_t post_window = {check_window};
ngx_conf_post_t post_conversion_header = {check_conversion_header};
ngx_conf_post_t post_stream = {check_stream};
ngx_conf_post_t post_buffer = {check_buffer};

constexpr ngx_uint_t kAnyLevel = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

}  // namespace

ngx_command_t commands[] = {
    {ngx_string("referral"), kAnyLevel | NGX_CONF_FLAG,
     set_enable, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, enable), nullptr},
    {ngx_string("referral_skip"), kAnyLevel | NGX_CONF_1MORE,
     ngx_http_set_predicate_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, skip), nullptr},
    {ngx_string("referral_ip_mask"), kAnyLevel | NGX_CONF_TAKE12,
     set_ip_mask, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_code"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_http_set_complex_value_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, code), nullptr},
    {ngx_string("referral_secret"), kAnyLevel | NGX_CONF_TAKE1,
     set_secret, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_cookie_name"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, cookie_name),
     &post_cookie_name},
    {ngx_string("referral_cookie_domain"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, cookie_domain),
     &post_cookie_domain},
    {ngx_string("referral_cookie_path"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, cookie_path),
     &post_cookie_path},
    {ngx_string("referral_cookie_flags"), kAnyLevel | NGX_CONF_1MORE,
     set_cookie_flags, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, cookie_flags), cookie_flags},
    {ngx_string("referral_window"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_sec_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, window), &post_window},
    {ngx_string("referral_attribution"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_enum_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, attribution),
     attributions},
    {ngx_string("referral_conversion_header"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, conversion_header),
     &post_conversion_header},
    {ngx_string("referral_redis"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
     set_redis, NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_stream"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, stream), &post_stream},
    {ngx_string("referral_buffer"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, buffer), &post_buffer},
    {ngx_string("referral_spool"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12,
     set_spool, NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_status"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
     status_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    ngx_null_command,
};

void* create_main_conf(ngx_conf_t* cf) noexcept {
    auto* mcf = static_cast<MainConf*>(ngx_pcalloc(cf->pool, sizeof(MainConf)));
    if (mcf == nullptr) return nullptr;
    mcf->redis_db = -1;
    mcf->buffer = NGX_CONF_UNSET_SIZE;
    mcf->spool_max = NGX_CONF_UNSET_SIZE;
    return mcf;
}

// Defaults only: every value was checked on its directive's line.
char* init_main_conf(ngx_conf_t*, void* conf) noexcept {
    auto* mcf = static_cast<MainConf*>(conf);
    if (mcf->stream.data == nullptr) {
        ngx_str_set(&mcf->stream, "referral:events");  // a two-statement macro
    }
    ngx_conf_init_size_value(mcf->buffer, 4 * 1024 * 1024);
    ngx_conf_init_size_value(mcf->spool_max, static_cast<size_t>(1024) * 1024 * 1024);
    return NGX_CONF_OK;
}

void* create_loc_conf(ngx_conf_t* cf) noexcept {
    auto* lcf = static_cast<LocConf*>(ngx_pcalloc(cf->pool, sizeof(LocConf)));
    if (lcf == nullptr) return nullptr;
    // ngx_pcalloc left: code, cookie_* strings, conversion_header,
    // cookie_attrs as null/empty, which means "not set here".
    lcf->enable = NGX_CONF_UNSET;
    lcf->keys = static_cast<ngx_array_t*>(NGX_CONF_UNSET_PTR);
    lcf->skip = static_cast<ngx_array_t*>(NGX_CONF_UNSET_PTR);
    // cookie_flags: 0 is "unset" for a bitmask.
    lcf->window = NGX_CONF_UNSET;
    lcf->attribution = NGX_CONF_UNSET_UINT;
    lcf->ip_mask_v4 = NGX_CONF_UNSET;
    lcf->ip_mask_v6 = NGX_CONF_UNSET;
    return lcf;
}

char* merge_loc_conf(ngx_conf_t* cf, void* parent, void* child) noexcept {
    auto* prev = static_cast<LocConf*>(parent);
    auto* conf = static_cast<LocConf*>(child);

    if (conf->enable == NGX_CONF_UNSET) {
        conf->enable_file = prev->enable_file;
        conf->enable_line = prev->enable_line;
    }
    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    if (conf->code == nullptr) {
        conf->code = prev->code;
        conf->code_is_arg_ref = prev->code_is_arg_ref;
    }
    if (conf->code == nullptr) {
        // The default, $arg_ref: compiled for completeness, but read with
        // ngx_http_arg() directly on every request.
        auto* cv = static_cast<ngx_http_complex_value_t*>(
            ngx_pcalloc(cf->pool, sizeof(ngx_http_complex_value_t)));
        if (cv == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
        ngx_http_compile_complex_value_t ccv;
        ngx_memzero(&ccv, sizeof(ccv));
        static ngx_str_t def = ngx_string("$arg_ref");
        ccv.cf = cf;
        ccv.value = &def;
        ccv.complex_value = cv;
        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) return static_cast<char*>(NGX_CONF_ERROR);
        conf->code = cv;
        conf->code_is_arg_ref = true;
        if (prev->code == nullptr) {  // compile once per level
            prev->code = cv;
            prev->code_is_arg_ref = true;
        }
    }
    ngx_conf_merge_ptr_value(conf->keys, prev->keys, nullptr);
    ngx_conf_merge_ptr_value(conf->skip, prev->skip, nullptr);
    ngx_conf_merge_str_value(conf->cookie_name, prev->cookie_name, "referral");
    ngx_conf_merge_str_value(conf->cookie_domain, prev->cookie_domain, "");
    ngx_conf_merge_str_value(conf->cookie_path, prev->cookie_path, "/");
    ngx_conf_merge_bitmask_value(conf->cookie_flags, prev->cookie_flags,
                                 NGX_CONF_BITMASK_SET | flag_httponly | flag_samesite_lax);
    ngx_conf_merge_sec_value(conf->window, prev->window, kDefaultWindow);
    ngx_conf_merge_uint_value(conf->attribution, prev->attribution,
                              static_cast<ngx_uint_t>(Attribution::first));
    if (conf->ip_mask_v4 == NGX_CONF_UNSET) {  // both halves come from one directive
        conf->ip_mask_v4 = prev->ip_mask_v4 == NGX_CONF_UNSET ? kIpMaskOff : prev->ip_mask_v4;
        conf->ip_mask_v6 = prev->ip_mask_v6 == NGX_CONF_UNSET ? kIpMaskOff : prev->ip_mask_v6;
    }
    if (conf->conversion_header.data == nullptr) conf->conversion_header = prev->conversion_header;
    if (conf->conversion_header.data == nullptr) {
        ngx_str_set(&conf->conversion_header, "X-Referral-Conversion");
    }

    if (conf->enable) {
        // Said about the `referral on` line, as nginx says "no
        // ssl_certificate is defined for the listen ... ssl directive in
        // FILE:LINE", not about the end of the block being merged.
        auto* mcf = static_cast<MainConf*>(
            ngx_http_conf_get_module_main_conf(cf, ngx_http_referral_module));
        const char* missing = nullptr;
        if (conf->keys == nullptr || conf->keys->nelts == 0) {
            missing = "referral_secret";
        } else if (!mcf->redis_set) {
            missing = "referral_redis";
        }
        if (missing != nullptr) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "no \"%s\" is defined for the \"referral on\" directive in %s:%ui",
                          missing, conf->enable_file, conf->enable_line);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
    }

    // "; Max-Age=N; Domain=D; Path=P; Secure; HttpOnly; SameSite=Lax",
    // once per location; only "; Secure" may be added per request (https).
    u_char buf[1024];  // domain and path are at most 255 bytes each
    u_char* p = ngx_snprintf(buf, sizeof(buf), "; Max-Age=%T", conf->window);
    if (conf->cookie_domain.len) p = ngx_snprintf(p, buf + sizeof(buf) - p, "; Domain=%V", &conf->cookie_domain);
    p = ngx_snprintf(p, buf + sizeof(buf) - p, "; Path=%V", &conf->cookie_path);
    if (conf->cookie_flags & flag_secure) p = ngx_snprintf(p, buf + sizeof(buf) - p, "; Secure");
    if (conf->cookie_flags & flag_httponly) p = ngx_snprintf(p, buf + sizeof(buf) - p, "; HttpOnly");
    if (conf->cookie_flags & flag_samesite_strict) p = ngx_snprintf(p, buf + sizeof(buf) - p, "; SameSite=Strict");
    if (conf->cookie_flags & flag_samesite_lax) p = ngx_snprintf(p, buf + sizeof(buf) - p, "; SameSite=Lax");
    if (conf->cookie_flags & flag_samesite_none) p = ngx_snprintf(p, buf + sizeof(buf) - p, "; SameSite=None");
    conf->cookie_attrs.len = p - buf;
    conf->cookie_attrs.data = static_cast<u_char*>(ngx_pnalloc(cf->pool, conf->cookie_attrs.len));
    if (conf->cookie_attrs.data == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
    ngx_memcpy(conf->cookie_attrs.data, buf, conf->cookie_attrs.len);
    return NGX_CONF_OK;
}

}  // namespace referral_ngx
