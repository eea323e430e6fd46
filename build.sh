#!/usr/bin/env bash
# ./build.sh          install missing Debian packages, configure, build
# ./build.sh test     build, then run every test (unit, sanitizer, fuzz, integration, packages)
# ./build.sh deb      build, then make the Debian packages in build/deb/
# ./build.sh run      build, then start the whole stack locally (Ctrl-C stops it)
# ./build.sh bench    build, then run the benchmarks in bench/
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
JOBS=$(nproc 2>/dev/null || echo 2)

PACKAGES=(
  build-essential cmake pkg-config git
  nginx nginx-dev libpcre2-dev zlib1g-dev libssl-dev
  libhiredis-dev redis-server libcurl4-openssl-dev
  libsqlite3-dev sqlite3 libpq-dev postgresql
  libtoml11-dev libcli11-dev nlohmann-json3-dev
  libcmocka-dev clang libclang-rt-14-dev
  python3 python3-pytest python3-psycopg2 python3-stripe
  wrk curl procps
  debhelper dpkg-dev help2man systemd
  libcpp-httplib-dev nodejs chromium python3-websocket
)
# npm: Debian's package, unless a Node.js build that ships its own is installed.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "build.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts these on install where it can; the project starts its own.
  $sudo service nginx stop >/dev/null 2>&1 || true
  $sudo service redis-server stop >/dev/null 2>&1 || true
}

# The dashboard's chart library, from the npm registry, exactly as
# package-lock.json pins it (embedded into referralctl by CMake).
dashboard_deps() {
  local d="$ROOT/src/ctl/dashboard"
  [ "$d/node_modules/.package-lock.json" -nt "$d/package-lock.json" ] && return 0
  (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
}

build() { # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

cmd=${1:-build}
install_packages
dashboard_deps
build "$ROOT/build"

case "$cmd" in
  build) ;;
  test)
    # Unit tests under ASan + UBSan (no module, no integration).
    build "$ROOT/build-asan" -DREFERRAL_SANITIZE=ON -DREFERRAL_MODULE=OFF -DREFERRAL_INTEGRATION=OFF
    (cd "$ROOT/build-asan" && ctest --output-on-failure -L unit)
    # Parsers under libFuzzer, each for a bounded time.
    build "$ROOT/build-fuzz" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DREFERRAL_FUZZ=ON -DREFERRAL_MODULE=OFF -DREFERRAL_WORKER=OFF -DREFERRAL_INTEGRATION=OFF
    (cd "$ROOT/build-fuzz" && ctest --output-on-failure -L fuzz)
    # Everything, against real nginx, Redis, SQLite and PostgreSQL; the
    # packages test installs (then purges) the packages made here.
    "$ROOT/packaging/build-deb.sh" "$ROOT/build"
    (cd "$ROOT/build" && ctest --output-on-failure)
    # The module on nginx 1.24 to mainline, built by nginx's own build.
    "$ROOT/tests/nginx-versions.sh"
    ;;
  deb) "$ROOT/packaging/build-deb.sh" "$ROOT/build" ;;
  run) exec "$ROOT/tools/run-stack.sh" ;;
  bench)
    "$ROOT/build/bench_click_path"
    "$ROOT/bench/edge.sh"
    "$ROOT/bench/worker.sh"
    "$ROOT/bench/delivery.sh"
    ;;
  *) echo "usage: $0 [build|test|deb|run|bench]" >&2; exit 2 ;;
esac
