#!/usr/bin/env bash
# Sets up everything hyper needs on a fresh Debian 12 machine, as root:
# Debian packages, the project's virtualenv, the guest kernel and initramfs, the accelerator
# choice and the local `busybox` image. Safe to run again: each step skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-system-x86 qemu-utils      # the hypervisor and disk images
  erofs-utils                      # container root filesystems (mkfs.erofs)
  e2fsprogs fio                    # volumes: mkfs.ext4, e2fsck; the volume benchmark
  busybox-static                   # the local busybox image; a shell in the initramfs
  python3.11-minimal libpython3.11-stdlib   # the guest agent's interpreter (Debian's)
  cpio zstd lz4 xz-utils           # unpacking the kernel package and its payload
  runc                             # the baseline of the benchmarks
  tmux                             # driving interactive terminals in tests
  docker-registry skopeo           # a real registry and an independent client, for image tests
  keystone python3-keystone        # a real OpenStack Keystone for the tenancy tests (docs/tenancy.md)
  apache2-utils openssl            # htpasswd and a test CA for the registry's basic auth and TLS
  nftables dnsmasq-base iproute2   # pod networks: rules, per-network DNS (docs/network.md)
  iperf3                           # the network benchmark (bench/network.py)
)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
ln -sf "$PWD/.venv/bin/hyper" /usr/local/bin/hyper
ln -sf "$PWD/.venv/bin/hyperd" /usr/local/bin/hyperd

.venv/bin/hyper setup
