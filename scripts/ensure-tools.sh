#!/usr/bin/env bash
# Installs the Debian tools the interop tests drive (qemu-img, fio, nbdkit,
# nbdinfo/nbdcopy, nbdfuse, tshark, iperf3, socat, curl, e2fsprogs, iproute2) when any is missing.
# A test never skips because a tool is absent: this script installs it, or
# fails naming what could not be installed.
set -euo pipefail

declare -A tool_package=(
  [qemu-img]=qemu-utils
  [qemu-io]=qemu-utils
  [qemu-nbd]=qemu-utils
  [fio]=fio
  [nbdkit]=nbdkit
  [nbdinfo]=libnbd-bin
  [nbdcopy]=libnbd-bin
  [nbdsh]=python3-libnbd
  [nbdfuse]=nbdfuse
  [tshark]=tshark
  [iperf3]=iperf3
  [socat]=socat
  [curl]=curl
  [sha256sum]=coreutils
  [timeout]=coreutils
  [mkfs.ext4]=e2fsprogs
  [ip]=iproute2
  [ping]=iputils-ping
)

missing=()
for tool in "${!tool_package[@]}"; do
  if ! PATH="/usr/sbin:/sbin:/usr/bin:$PATH" command -v "$tool" >/dev/null 2>&1; then
    missing+=("${tool_package[$tool]}")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "ensure-tools: installing ${packages[*]}" >&2
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure-tools: need root to install ${packages[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections || true
apt-get update -qq >/dev/null
if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
  echo "ensure-tools: apt-get install failed for: ${packages[*]}" >&2
  exit 1
fi
