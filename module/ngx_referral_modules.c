/* What `make modules` would generate for this dynamic module: nginx looks
 * these three symbols up with dlsym when it loads the .so. The order puts
 * the header filter where nginx's build would put an HTTP_FILTER module. */
#include <ngx_config.h>
#include <ngx_core.h>

extern ngx_module_t ngx_http_referral_module;

ngx_module_t *ngx_modules[] = {
    &ngx_http_referral_module,
    NULL
};

char *ngx_module_names[] = {
    "ngx_http_referral_module",
    NULL
};

char *ngx_module_order[] = {
    "ngx_http_referral_module",
    "ngx_http_copy_filter_module",
    NULL
};
