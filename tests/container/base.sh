#!/usr/bin/env bash
# Build a local Debian bookworm image with Python 3 and pip, without any container registry:
# debootstrap a root filesystem, prepare it, import it into podman under the tag given as $2.
#
#   base.sh PODMAN_WRAPPER TAG WORK_DIR
#
# The caller keys TAG on a hash of this file, the mirrors and the CA certificates, so any change
# to this recipe builds a new base. See shared/reference/containers.md for the why of each step.
set -euo pipefail

podman=$1
tag=$2
work=$3

# The mirrors this machine already uses (deb822 or one-line format), else Debian's own.
mirror=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1 | tr -d ' ' || true)
security=$(grep -rhoE 'https?://[^ ]+/debian-security/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}

rootfs=$work/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"
trap 'rm -rf "$rootfs"' EXIT

echo "base: debootstrap bookworm from $mirror"
debootstrap --variant=minbase \
  --include=ca-certificates,python3,python3-venv,python3-pip \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Outbound HTTPS passes through a proxy that re-signs certificates: trust what the host trusts.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"

cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES

# Like python:3.13-slim: pip may install into the image's Python.
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

echo "base: importing as $tag"
tar -C "$rootfs" -c . | "$podman" import \
  --change 'CMD ["bash"]' \
  --change 'ENV LANG=C.UTF-8' \
  - "$tag" >"$work/import.log" 2>&1 \
  || { cat "$work/import.log" >&2; exit 1; }
