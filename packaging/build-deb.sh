#!/usr/bin/env bash
# packaging/build-deb.sh BUILD_DIR: the Debian packages of what CMake built in
# BUILD_DIR (./build.sh deb calls it), written to BUILD_DIR/deb/:
#   libnginx-mod-http-referral_<version>_<arch>.deb
#   referral-worker_<version>_<arch>.deb
# The version is debian/changelog's. The source tree is staged in
# BUILD_DIR/deb-stage/ (debian/ plus the built files), because
# dpkg-buildpackage writes into the source tree and next to it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
stage=$build/deb-stage
out=$build/deb

for f in ngx_http_referral_module.so referral-worker referralctl; do
  [ -f "$build/$f" ] || { echo "build-deb: $build/$f is missing (./build.sh first)" >&2; exit 1; }
done

rm -rf "$stage" "$out"
mkdir -p "$stage/src/build" "$stage/src/config" "$out"
cp -r "$here/debian" "$stage/src/"
cp "$build/ngx_http_referral_module.so" "$build/referral-worker" "$build/referralctl" "$stage/src/build/"
cp "$root/config/worker.toml" "$stage/src/config/"
cp "$root/README.md" "$stage/src/"

# -b: binary packages only; -uc -us: unsigned. Output lands in $stage.
(cd "$stage/src" && dpkg-buildpackage -b -uc -us >"$stage/build.log" 2>&1) || {
  tail -n 40 "$stage/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed, full log: $stage/build.log" >&2
  exit 1
}
mv "$stage"/*.deb "$out/"
ls -1 "$out"
