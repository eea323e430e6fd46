#!/usr/bin/env bash
# packaging/build-deb.sh BUILD_DIR: the Debian packages (./build.sh deb calls
# it), written to BUILD_DIR/deb/:
#   libnginx-mod-http-referral_<version>_<arch>.deb
#   referral-worker_<version>_<arch>.deb
# The version is debian/changelog's. The source tree as it is in this
# checkout (tracked and new files, not ignored ones) is staged with debian/ in
# BUILD_DIR/deb-stage/src, because dpkg-buildpackage builds in the source
# tree and writes next to it; debian/rules compiles there with Debian's flags.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
stage=$build/deb-stage
out=$build/deb

rm -rf "$stage" "$out"
mkdir -p "$stage/src" "$out"
sources=(CMakeLists.txt src module tests config README.md)
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$root" && git ls-files -z --cached --others --exclude-standard -- "${sources[@]}" |
     xargs -0 cp --parents -t "$stage/src")
else # an unpacked tarball: nothing is ignored there
  (cd "$root" && cp -r --parents -t "$stage/src" "${sources[@]}")
fi
# referralctl embeds the dashboard's chart library, which npm installed
# (./build.sh runs npm ci) under the git-ignored node_modules/.
(cd "$root" && cp -r --parents -t "$stage/src" src/ctl/dashboard/node_modules)
cp -r "$here/debian" "$stage/src/"

# -b: binary packages only; -uc -us: unsigned. Output lands in $stage.
export DEB_BUILD_OPTIONS="parallel=${JOBS:-$(nproc)} ${DEB_BUILD_OPTIONS:-}"
(cd "$stage/src" && dpkg-buildpackage -b -uc -us >"$stage/build.log" 2>&1) || {
  tail -n 40 "$stage/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed, full log: $stage/build.log" >&2
  exit 1
}
mv "$stage"/*.deb "$out/"
ls -1 "$out"
