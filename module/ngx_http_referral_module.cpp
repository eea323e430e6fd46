// ngx_http_referral_module: the module definition and its lifecycle hooks.
// Everything but the ngx_module_t itself has internal linkage or lives in
// namespace referral_ngx; every hook is noexcept and catches on its own.
#include <sys/stat.h>
#include <unistd.h>

#include "referral_module.h"

namespace referral_ngx {
namespace {

// Attribution (and so the click) as soon as the location is known, not only
// when the response headers go out: a click still counts when the client
// leaves before a slow backend answers, and `referral_code $1` reads the
// capture of the location's own regex. Cached, so later reads agree.
ngx_int_t preaccess_handler(ngx_http_request_t* r) noexcept {
    auto* lcf = static_cast<LocConf*>(ngx_http_get_module_loc_conf(r, ngx_http_referral_module));
    if (r == r->main && lcf->enable) (void)attribution(r);
    return NGX_DECLINED;
}

ngx_int_t postconfiguration(ngx_conf_t* cf) noexcept {
    if (add_variables(cf) != NGX_OK) return NGX_ERROR;
    if (init_filter(cf) != NGX_OK) return NGX_ERROR;
    auto* cmcf = static_cast<ngx_http_core_main_conf_t*>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module));
    auto* h = static_cast<ngx_http_handler_pt*>(
        ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers));
    if (h == nullptr) return NGX_ERROR;
    *h = preaccess_handler;
    auto* mcf = static_cast<MainConf*>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_referral_module));
    return add_counters_zone(cf, mcf);
}

// Runs in the master, before workers drop privileges: the spool directory
// must exist and belong to the worker user. A failure here is logged, never
// returned: nginx exits on an init_module error, even on a reload, and the
// configuration already checked what can be checked (referral_conf.cpp).
ngx_int_t init_module(ngx_cycle_t* cycle) noexcept {
    auto* mcf = static_cast<MainConf*>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_referral_module));
    if (mcf == nullptr || mcf->spool.len == 0) return NGX_OK;
    const char* dir = reinterpret_cast<const char*>(mcf->spool.data);
    if (ngx_create_dir(mcf->spool.data, 0700) == NGX_FILE_ERROR && ngx_errno != NGX_EEXIST) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "referral_spool: cannot create \"%s\"; events will wait in memory only", dir);
        return NGX_OK;
    }
    auto* ccf = reinterpret_cast<ngx_core_conf_t*>(ngx_get_conf(cycle->conf_ctx, ngx_core_module));
    if (geteuid() == 0 && ccf->user != static_cast<ngx_uid_t>(NGX_CONF_UNSET_UINT)) {
        struct stat st;
        if (stat(dir, &st) == 0 && st.st_uid == 0 && chown(dir, ccf->user, ccf->group) != 0) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "referral_spool: cannot give \"%s\" to the worker user", dir);
        }
    }
    return NGX_OK;
}

ngx_int_t init_process(ngx_cycle_t* cycle) noexcept {
    if (ngx_process == NGX_PROCESS_WORKER || ngx_process == NGX_PROCESS_SINGLE) {
        claim_counters_slot(cycle->log);
    }
    return delivery_init_process(cycle);
}

void exit_process(ngx_cycle_t* cycle) noexcept {
    delivery_exit_process(cycle);
    release_counters_slot();
}

ngx_http_module_t module_ctx = {
    nullptr,            // preconfiguration
    postconfiguration,  // postconfiguration
    create_main_conf,   // create main configuration
    init_main_conf,     // init main configuration
    nullptr,            // create server configuration
    nullptr,            // merge server configuration
    create_loc_conf,    // create location configuration
    merge_loc_conf,     // merge location configuration
};

}  // namespace
}  // namespace referral_ngx

extern "C" {
__attribute__((visibility("default"))) ngx_module_t ngx_http_referral_module = {
    NGX_MODULE_V1,
    &referral_ngx::module_ctx,      // module context
    referral_ngx::commands,         // module directives
    NGX_HTTP_MODULE,                // module type
    nullptr,                        // init master
    referral_ngx::init_module,      // init module
    referral_ngx::init_process,     // init process
    nullptr,                        // init thread
    nullptr,                        // exit thread
    referral_ngx::exit_process,     // exit process
    nullptr,                        // exit master
    NGX_MODULE_V1_PADDING
};
}
