# Shared set-up for scripts/coserve and scripts/test: installs the Debian
# packages that are missing, then configures and builds when needed.
# Sourced, not run. Progress goes to stderr so that apps own stdout.

COSERVE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COSERVE_PACKAGES=(build-essential cmake pkg-config luajit2 libluajit2-5.1-dev libuv1-dev lua-busted node-llhttp libssl-dev zlib1g-dev libpq-dev)

cs_need_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "coserve: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

# cs_need_packages_no_start PKG...: cs_need_packages for packages that
# install a service (nginx-extras, redis-server, memcached, dnsmasq): a
# policy-rc.d keeps every service from starting during the install; one
# that was there already (Debian's container images have one) is left alone.
cs_need_packages_no_start() {
  local policy=/usr/sbin/policy-rc.d made="" rc sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# coserve: no service starts during its install\nexit 101\n' |
      $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && made=1
  fi
  cs_need_packages "$@"
  rc=$?
  [ -z "$made" ] || $sudo rm -f "$policy"
  return $rc
}

# cs_build DIR [cmake args...]: configure once, then an incremental build.
# Quiet unless it fails: then the whole log goes to stderr.
cs_build() {
  local dir=$1 log
  shift
  log=$(mktemp)
  if { [ -f "$dir/CMakeCache.txt" ] || cmake -S "$COSERVE_ROOT" -B "$dir" "$@"; } >"$log" 2>&1 &&
     cmake --build "$dir" -j "$(nproc)" >>"$log" 2>&1; then
    rm -f "$log"
    return 0
  fi
  cat "$log" >&2
  rm -f "$log"
  echo "coserve: the build in $dir failed" >&2
  return 1
}
