#!/usr/bin/env bash
# The module on the nginx versions deployments run, each built from an
# official release tarball the way nginx documents third-party modules:
#
#   ./configure --with-compat --add-dynamic-module=module/ && make && make modules
#
# (which is also the test that module/config works), then a representative
# part of the module's integration tests against that nginx and that .so.
# Debian's stock 1.22 runs the whole suite through ctest instead.
#
#   tests/nginx-versions.sh [VERSION...]    default: every tarball found
#
# NGINX_TARBALLS  where nginx-VERSION.tar.gz are (default ../shared/nginx)
# NGINX_TESTS     the test files to run (default below; "" builds only)
# Trees are kept in build-nginx/VERSION/: a second run rebuilds only the
# module (nginx's Makefile lists the module's headers as dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARBALLS=${NGINX_TARBALLS:-$ROOT/../shared/nginx}
OUT=$ROOT/build-nginx
JOBS=${JOBS:-2}
TESTS=${NGINX_TESTS-"test_module_cookie.py test_module_attribution.py test_module_conversion.py
  test_module_events.py test_module_redis.py test_module_config.py"}
# What the tests use besides the defaults (https backends, realip). Fewer
# modules than Debian's build: only the build time would grow.
CONFIGURE=(--with-compat --with-threads --with-http_ssl_module --with-http_realip_module)

versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
  for t in "$TARBALLS"/nginx-*.tar.gz; do
    [ -e "$t" ] || { echo "nginx-versions: no tarballs in $TARBALLS" >&2; exit 1; }
    v=${t##*/nginx-}; versions+=("${v%.tar.gz}")
  done
fi

build_one() { # VERSION -> build-nginx/VERSION/nginx-VERSION/objs/{nginx,*.so}
  local v=$1 dir=$OUT/$1 src=$OUT/$1/nginx-$1
  # A changed module/config (a new source file) needs ./configure again.
  local stamp
  stamp="${CONFIGURE[*]} --add-dynamic-module=$ROOT/module $(sha256sum <"$ROOT/module/config")"
  if [ ! -x "$src/objs/nginx" ] || [ "$(cat "$dir/configured" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    tar -xzf "$TARBALLS/nginx-$v.tar.gz" -C "$dir"
    (cd "$src" && ./configure "${CONFIGURE[@]}" --add-dynamic-module="$ROOT/module" \
       >"$dir/configure.log" 2>&1) || { tail -30 "$dir/configure.log"; return 1; }
    (cd "$src" && nice -n 10 make -j"$JOBS" >"$dir/make.log" 2>&1) \
      || { grep -E "error|warning" "$dir/make.log" | head -40; tail -20 "$dir/make.log"; return 1; }
    echo "$stamp" >"$dir/configured"
  fi
  # nginx's CFLAGS carry -Werror: a warning in the module fails this step.
  (cd "$src" && nice -n 10 make -j"$JOBS" modules >"$dir/modules.log" 2>&1) \
    || { grep -E "error|warning" "$dir/modules.log" | head -40; return 1; }
  # The .so loads (a source missing from module/config is an undefined
  # symbol only dlopen() sees): said once here, not by every test.
  mkdir -p "$dir/t/logs"
  printf 'load_module %s;\nevents {}\n' "$src/objs/ngx_http_referral_module.so" >"$dir/t/nginx.conf"
  "$src/objs/nginx" -t -q -p "$dir/t" -c "$dir/t/nginx.conf" -e "$dir/t/logs/error.log" \
    || { cat "$dir/t/logs/error.log"; return 1; }
}

failed=()
for v in "${versions[@]}"; do
  echo "== nginx $v: build"
  if ! build_one "$v"; then failed+=("$v (build)"); continue; fi
  objs=$OUT/$v/nginx-$v/objs
  "$objs/nginx" -v 2>&1
  files=()
  for t in $TESTS; do files+=("$ROOT/tests/integration/$t"); done
  [ ${#files[@]} -gt 0 ] || continue  # NGINX_TESTS="": build only
  echo "== nginx $v: tests"
  if ! REFERRAL_NGINX=$objs/nginx REFERRAL_MODULE=$objs/ngx_http_referral_module.so \
       REFERRAL_SOURCE_DIR=$ROOT REFERRAL_BUILD_DIR=$ROOT/build \
       /usr/bin/python3 -m pytest -q -p no:cacheprovider "${files[@]}"; then
    failed+=("$v (tests)")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "nginx-versions: FAILED on ${failed[*]}" >&2
  exit 1
fi
echo "nginx-versions: the module builds and passes on nginx ${versions[*]}"
