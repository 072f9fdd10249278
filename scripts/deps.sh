#!/usr/bin/env bash
# Installs the Debian packages rackflow's tests and `make run` use, when a
# command they provide is missing. Idempotent; needs root (or sudo).
set -euo pipefail

# command -> Debian package
declare -A need=(
  [ipmi_sim]=openipmi
  [ipmitool]=ipmitool
  [sshd]=openssh-server
  [ssh]=openssh-client
  [busybox]=busybox
  [dhclient]=isc-dhcp-client
  [ip]=iproute2
  [curl]=curl
  [setsid]=util-linux
  [flock]=util-linux
  [unshare]=util-linux
  [cpio]=cpio
  [netplan]=netplan.io
  [ifquery]=ifupdown
  [ss]=iproute2
  [timeout]=coreutils
  [bash]=bash
  [wget]=wget
  [gzip]=gzip
  [zstd]=zstd
  [xz]=xz-utils
  [openssl]=openssl
  [sudo]=sudo
)
# sshd lives in /usr/sbin, which may not be on PATH for non-root shells.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# `deps.sh cluster` (make cluster, make test-cluster): also PostgreSQL's
# server, whose initdb and pg_ctl Debian keeps off PATH.
if [ "${1:-}" = cluster ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "deps: installing Debian packages: ${pkgs[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
