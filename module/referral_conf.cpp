// Directives, configuration structures and their merge: defaults live in the
// merge functions, static cookie attributes are rendered once here, and key
// files are read here, in the master, before workers drop privileges.
#include <new>

#include "core/hmac.h"
#include "referral_module.h"

namespace referral_ngx {
namespace {

constexpr size_t kMaxKeyFileLen = 4096;
constexpr time_t kDefaultWindow = 30 * 24 * 3600;
constexpr time_t kMaxWindow = 3650 * 24 * 3600;  // keeps window * 1000 far from overflow

void free_prepared_key(void* data) noexcept {
    delete static_cast<referral::HmacSha256*>(data);
}

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
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"referral_secret\": cannot open key file \"%V\"", &name);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    char* rv = static_cast<char*>(NGX_CONF_ERROR);
    ngx_file_info_t fi;
    u_char* buf = nullptr;
    ssize_t n = 0;
    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"referral_secret\": cannot stat key file \"%V\"", &name);
        goto done;
    }
    if (ngx_file_size(&fi) < static_cast<off_t>(referral::kMinKeyLen) ||
        ngx_file_size(&fi) > static_cast<off_t>(kMaxKeyFileLen)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"referral_secret\": key file \"%V\" must hold %uz to %uz bytes, it has %O",
                           &name, referral::kMinKeyLen, kMaxKeyFileLen, ngx_file_size(&fi));
        goto done;
    }
    buf = static_cast<u_char*>(ngx_pnalloc(cf->pool, ngx_file_size(&fi)));
    if (buf == nullptr) goto done;
    n = ngx_read_file(&file, buf, ngx_file_size(&fi), 0);
    if (n != ngx_file_size(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"referral_secret\": cannot read key file \"%V\"", &name);
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
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"referral_secret\": cannot set up HMAC-SHA256 for \"%V\"", &name);
            goto done;
        }
        // The key schedule lives as long as the configuration that owns it.
        cln->handler = free_prepared_key;
        cln->data = const_cast<referral::HmacSha256*>(k->prepared);
    }
    rv = NGX_CONF_OK;
done:
    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno, ngx_close_file_n " \"%V\" failed", &name);
    }
    return rv;
}

char* set_redis(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* mcf = static_cast<MainConf*>(conf);
    if (mcf->redis_set) return const_cast<char*>("is duplicate");
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    ngx_str_t addr = value[1];

    if (addr.len > 5 && ngx_strncmp(addr.data, "unix:", 5) == 0) {
        mcf->redis_unix.len = addr.len - 5;
        mcf->redis_unix.data = static_cast<u_char*>(ngx_pnalloc(cf->pool, addr.len - 4));
        if (mcf->redis_unix.data == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
        ngx_cpystrn(mcf->redis_unix.data, addr.data + 5, addr.len - 4);
    } else {
        // Resolved here, once, as upstream servers are: hiredis would call
        // getaddrinfo() on every reconnect, a blocking lookup in a worker.
        ngx_url_t u;
        ngx_memzero(&u, sizeof(ngx_url_t));
        u.url = addr;
        u.no_resolve = 0;
        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0 || u.no_port) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid address \"%V\" in \"referral_redis\"%s%s: "
                               "expected host:port or unix:/path", &addr,
                               u.err ? ": " : "", u.err ? u.err : "");
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        u_char text[NGX_SOCKADDR_STRLEN + 1];
        size_t len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, text,
                                   NGX_SOCKADDR_STRLEN, 0);
        // ngx_sock_ntop() writes an IPv6 address without brackets when no
        // port is asked for, which is what hiredis takes.
        mcf->redis_host.data = static_cast<u_char*>(ngx_pnalloc(cf->pool, len + 1));
        if (mcf->redis_host.data == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
        ngx_cpystrn(mcf->redis_host.data, text, len + 1);
        mcf->redis_host.len = len;
        mcf->redis_port = u.port;
    }

    for (ngx_uint_t i = 2; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "password=", 9) == 0 && value[i].len > 9) {
            if (mcf->redis_password.len > 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "duplicate password in \"referral_redis\"");
                return static_cast<char*>(NGX_CONF_ERROR);
            }
            mcf->redis_password.data = value[i].data + 9;
            mcf->redis_password.len = value[i].len - 9;
        } else if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            mcf->redis_db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (mcf->redis_db == NGX_ERROR || mcf->redis_db > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid db \"%V\" in \"referral_redis\"", &value[i]);
                return static_cast<char*>(NGX_CONF_ERROR);
            }
        } else {
            // Never echo a parameter back: it may be a mistyped password.
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter #%ui in \"referral_redis\": "
                               "expected password=P or db=N", i);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
    }
    mcf->redis_set = 1;
    return NGX_CONF_OK;
}

char* set_cookie_flags(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->cookie_flags != NGX_CONF_UNSET_UINT) return const_cast<char*>("is duplicate");
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    ngx_uint_t flags = 0;
    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        ngx_str_t* v = &value[i];
        ngx_uint_t f = 0;
        if (v->len == 6 && ngx_strncasecmp(v->data, (u_char*)"secure", 6) == 0) {
            f = flag_secure;
        } else if (v->len == 8 && ngx_strncasecmp(v->data, (u_char*)"httponly", 8) == 0) {
            f = flag_httponly;
        } else if (v->len == 15 && ngx_strncasecmp(v->data, (u_char*)"samesite=strict", 15) == 0) {
            f = flag_samesite_strict;
        } else if (v->len == 12 && ngx_strncasecmp(v->data, (u_char*)"samesite=lax", 12) == 0) {
            f = flag_samesite_lax;
        } else if (v->len == 13 && ngx_strncasecmp(v->data, (u_char*)"samesite=none", 13) == 0) {
            f = flag_samesite_none;
        } else if (v->len == 3 && ngx_strncmp(v->data, "off", 3) == 0 && cf->args->nelts == 2) {
            f = 0;
        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"referral_cookie_flags\": expected "
                               "secure, httponly or samesite=strict|lax|none", v);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        const ngx_uint_t samesite = flag_samesite_strict | flag_samesite_lax | flag_samesite_none;
        if ((f & samesite) && (flags & samesite)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"referral_cookie_flags\" has more than one samesite value");
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        flags |= f;
    }
    if ((flags & flag_samesite_none) && !(flags & flag_secure)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"referral_cookie_flags samesite=none\" without \"secure\": browsers "
                           "refuse such a cookie on plain http (https adds Secure anyway)");
    }
    lcf->cookie_flags = flags;
    return NGX_CONF_OK;
}

char* set_conversion_header(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->conversion_header.data != nullptr) return const_cast<char*>("is duplicate");
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        lcf->conversion_header.data = reinterpret_cast<u_char*>(const_cast<char*>(""));
        lcf->conversion_header.len = 0;
        return NGX_CONF_OK;
    }
    for (size_t i = 0; i < value[1].len; i++) {
        u_char c = value[1].data[i];
        bool token = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!token) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid header name \"%V\" in \"referral_conversion_header\"",
                               &value[1]);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
    }
    lcf->conversion_header = value[1];
    return NGX_CONF_OK;
}

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

char* set_attribution(ngx_conf_t* cf, ngx_command_t*, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->attribution != NGX_CONF_UNSET_UINT) return const_cast<char*>("is duplicate");
    ngx_str_t* value = static_cast<ngx_str_t*>(cf->args->elts);
    if (value[1].len == 5 && ngx_strncmp(value[1].data, "first", 5) == 0) {
        lcf->attribution = static_cast<ngx_uint_t>(Attribution::first);
    } else if (value[1].len == 4 && ngx_strncmp(value[1].data, "last", 4) == 0) {
        lcf->attribution = static_cast<ngx_uint_t>(Attribution::last);
    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"referral_attribution\": expected first or last",
                           &value[1]);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    return NGX_CONF_OK;
}

}  // namespace

ngx_command_t commands[] = {
    {ngx_string("referral"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, enable), nullptr},
    {ngx_string("referral_code"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_http_set_complex_value_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, code), nullptr},
    {ngx_string("referral_secret"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     set_secret, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_cookie_name"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, cookie_name), nullptr},
    {ngx_string("referral_cookie_domain"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, cookie_domain), nullptr},
    {ngx_string("referral_cookie_path"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, cookie_path), nullptr},
    {ngx_string("referral_cookie_flags"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_1MORE,
     set_cookie_flags, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_window"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_sec_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, window), nullptr},
    {ngx_string("referral_attribution"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     set_attribution, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_conversion_header"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     set_conversion_header, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_redis"),
     NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE123,
     set_redis, NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("referral_stream"),
     NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, stream), nullptr},
    {ngx_string("referral_buffer"),
     NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, buffer), nullptr},
    {ngx_string("referral_spool"),
     NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, spool), nullptr},
    {ngx_string("referral_status"),
     NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
     status_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    ngx_null_command,
};

void* create_main_conf(ngx_conf_t* cf) noexcept {
    auto* mcf = static_cast<MainConf*>(ngx_pcalloc(cf->pool, sizeof(MainConf)));
    if (mcf == nullptr) return nullptr;
    mcf->redis_db = -1;
    mcf->buffer = NGX_CONF_UNSET_SIZE;
    return mcf;
}

char* init_main_conf(ngx_conf_t* cf, void* conf) noexcept {
    auto* mcf = static_cast<MainConf*>(conf);
    if (mcf->stream.data == nullptr) {
        ngx_str_set(&mcf->stream, "referral:events");  // a two-statement macro
    }
    if (mcf->stream.len == 0 || mcf->stream.len > 256) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"referral_stream\" key");
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    ngx_conf_init_size_value(mcf->buffer, 4 * 1024 * 1024);
    if (mcf->buffer < 64 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"referral_buffer\" must be at least 64k");
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (mcf->spool.len == 3 && ngx_strncmp(mcf->spool.data, "off", 3) == 0) {
        mcf->spool.len = 0;
    }
    if (mcf->spool.len > 0) {
        if (ngx_conf_full_name(cf->cycle, &mcf->spool, 0) != NGX_OK) {
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        // NUL-terminated for the POSIX calls in the spool.
        u_char* p = static_cast<u_char*>(ngx_pnalloc(cf->pool, mcf->spool.len + 1));
        if (p == nullptr) return static_cast<char*>(NGX_CONF_ERROR);
        ngx_cpystrn(p, mcf->spool.data, mcf->spool.len + 1);
        mcf->spool.data = p;
        // Checked now so a bad path fails `nginx -t` and a reload cleanly;
        // the directory itself is created when the workers start.
        ngx_file_info_t fi;
        if (ngx_file_info(p, &fi) == NGX_FILE_ERROR) {
            u_char* slash = static_cast<u_char*>(ngx_strlchr(p, p + mcf->spool.len, '/'));
            u_char* last = p + mcf->spool.len;
            while (last > p && *(last - 1) != '/') last--;
            ngx_str_t parent = {static_cast<size_t>(last - p > 1 ? last - p - 1 : 1), p};
            u_char pbuf[NGX_MAX_PATH];
            if (slash == nullptr || parent.len >= sizeof(pbuf)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"referral_spool\" \"%s\"", p);
                return static_cast<char*>(NGX_CONF_ERROR);
            }
            ngx_cpystrn(pbuf, parent.data, parent.len + 1);
            if (ngx_file_info(pbuf, &fi) == NGX_FILE_ERROR || !ngx_is_dir(&fi)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"referral_spool\": \"%s\" cannot be created: \"%s\" is not a directory",
                                   p, pbuf);
                return static_cast<char*>(NGX_CONF_ERROR);
            }
        } else if (!ngx_is_dir(&fi)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"referral_spool\": \"%s\" is not a directory", p);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
    }
    return NGX_CONF_OK;
}

void* create_loc_conf(ngx_conf_t* cf) noexcept {
    auto* lcf = static_cast<LocConf*>(ngx_pcalloc(cf->pool, sizeof(LocConf)));
    if (lcf == nullptr) return nullptr;
    // ngx_pcalloc left: code, cookie_* strings, conversion_header,
    // cookie_attrs as null/empty, which means "not set here".
    lcf->enable = NGX_CONF_UNSET;
    lcf->keys = static_cast<ngx_array_t*>(NGX_CONF_UNSET_PTR);
    lcf->cookie_flags = NGX_CONF_UNSET_UINT;
    lcf->window = NGX_CONF_UNSET;
    lcf->attribution = NGX_CONF_UNSET_UINT;
    return lcf;
}

char* merge_loc_conf(ngx_conf_t* cf, void* parent, void* child) noexcept {
    auto* prev = static_cast<LocConf*>(parent);
    auto* conf = static_cast<LocConf*>(child);

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
    ngx_conf_merge_str_value(conf->cookie_name, prev->cookie_name, "referral");
    ngx_conf_merge_str_value(conf->cookie_domain, prev->cookie_domain, "");
    ngx_conf_merge_str_value(conf->cookie_path, prev->cookie_path, "/");
    ngx_conf_merge_uint_value(conf->cookie_flags, prev->cookie_flags,
                              flag_httponly | flag_samesite_lax);
    ngx_conf_merge_sec_value(conf->window, prev->window, kDefaultWindow);
    ngx_conf_merge_uint_value(conf->attribution, prev->attribution,
                              static_cast<ngx_uint_t>(Attribution::first));
    if (conf->conversion_header.data == nullptr) conf->conversion_header = prev->conversion_header;
    if (conf->conversion_header.data == nullptr) {
        ngx_str_set(&conf->conversion_header, "X-Referral-Conversion");
    }

    if (!is_cookie_token(conf->cookie_name)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"referral_cookie_name\" \"%V\"",
                           &conf->cookie_name);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (conf->cookie_domain.len > 0 && !is_attr_value(conf->cookie_domain)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"referral_cookie_domain\" \"%V\"",
                           &conf->cookie_domain);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (!is_attr_value(conf->cookie_path) || conf->cookie_path.data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"referral_cookie_path\" \"%V\"",
                           &conf->cookie_path);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (conf->window <= 0 || conf->window > kMaxWindow) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"referral_window\" must be more than 0 and at most 3650d");
        return static_cast<char*>(NGX_CONF_ERROR);
    }

    if (conf->enable) {
        if (conf->keys == nullptr || conf->keys->nelts == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"referral_secret\" is required where \"referral on\" is set");
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        auto* mcf = static_cast<MainConf*>(
            ngx_http_conf_get_module_main_conf(cf, ngx_http_referral_module));
        if (!mcf->redis_set) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"referral_redis\" is required where \"referral on\" is set");
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
