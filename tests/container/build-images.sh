#!/usr/bin/env bash
# Prepare podman on this machine and build the images the container tests run:
#   1. podman, buildah, runc and debootstrap from Debian (apt only when one is missing);
#   2. a containers.conf (runc, cgroupfs, lower ulimits, file events) and a `podman` wrapper that
#      keeps every image and container under $CACHE (reused between runs: base and layers cached);
#   3. a local Debian bookworm base with Python (tests/container/base.sh), keyed on its recipe;
#   4. our Dockerfile on that base, then examples/quix on top of it.
#
# Environment: CONTAINER_CACHE (default /var/tmp/marimo-orchestrator-podman),
#              IMAGE (default localhost/marimo-orchestrator:test),
#              EXAMPLE_IMAGE (default localhost/marimo-orchestrator-quix-example:test).
# Prints nothing on stdout but progress lines; the wrapper is $CACHE/bin/podman.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CONTAINER_CACHE:-/var/tmp/marimo-orchestrator-podman}
image=${IMAGE:-localhost/marimo-orchestrator:test}
example_image=${EXAMPLE_IMAGE:-localhost/marimo-orchestrator-quix-example:test}

elapsed() { echo "$(( $(date +%s) - started ))s"; }
started=$(date +%s)

# --- 1. packages -----------------------------------------------------------------------------
missing=()
for tool in podman buildah runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "container: installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >/dev/null
fi

# --- 2. configuration ------------------------------------------------------------------------
mkdir -p "$cache/bin" "$cache/storage" "$cache/run" "$cache/tmp" "$cache/work"
cat >"$cache/containers.conf" <<CONF
# Written by tests/container/build-images.sh; see shared/reference/containers.md.
[containers]
# The defaults fail here with "error setting rlimit ... operation not permitted".
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun fails with "cgroups in hybrid mode not supported".
runtime = "runc"
cgroup_manager = "cgroupfs"
# No journald or systemd here.
events_logger = "file"
tmp_dir = "$cache/tmp"
CONF
cat >"$cache/bin/podman" <<WRAPPER
#!/usr/bin/env bash
# podman with the container tests' private storage and configuration.
set -euo pipefail
export CONTAINERS_CONF="$cache/containers.conf"
exec podman --root "$cache/storage" --runroot "$cache/run" "\$@"
WRAPPER
chmod +x "$cache/bin/podman"
podman=$cache/bin/podman

# Containers of an earlier run that was killed before its clean-up (only the tests' own storage).
"$podman" ps --all --quiet --filter label=marimo-orchestrator-test=1 \
  | xargs -r "$podman" rm --force --time 2 >/dev/null

# --- 3. the local base -----------------------------------------------------------------------
key=$(
  {
    cat "$here/base.sh"
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true
    cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true
  } | sha256sum | cut -c1-16
)
base=localhost/marimo-orchestrator-base:$key
if "$podman" image exists "$base"; then
  echo "container: base $base is cached"
else
  echo "container: building base $base (debootstrap, about a minute)"
  "$here/base.sh" "$podman" "$base" "$cache/work"
  # Bases built from an older recipe are of no more use.
  "$podman" images --format '{{.Repository}}:{{.Tag}}' \
    | grep '^localhost/marimo-orchestrator-base:' | grep -v ":$key\$" \
    | xargs -r "$podman" rmi -f >/dev/null || true
  echo "container: base built ($(elapsed))"
fi

# --- 4. our image, then the example on top ---------------------------------------------------
# --format docker keeps HEALTHCHECK (the OCI format has no field for it).
build=("$podman" build --format docker --network host --layers)
echo "container: building $image from Dockerfile"
"${build[@]}" --build-arg "BASE_IMAGE=$base" -t "$image" -f "$repo/Dockerfile" "$repo" \
  >"$cache/work/build-image.log" 2>&1 \
  || { tail -n 40 "$cache/work/build-image.log" >&2; exit 1; }
echo "container: built $image ($(elapsed))"
echo "container: building $example_image from examples/quix"
"${build[@]}" --build-arg "ORCHESTRATOR_IMAGE=$image" -t "$example_image" "$repo/examples/quix" \
  >"$cache/work/build-example.log" 2>&1 \
  || { tail -n 40 "$cache/work/build-example.log" >&2; exit 1; }
echo "container: built $example_image ($(elapsed))"
# Images replaced by these builds; the layer cache (intermediate images) stays.
"$podman" image prune --force >/dev/null
# Write the new layers out now: a first start measured right after a build would otherwise wait
# for this writeback in its first fsync (the orchestrator creates state/session-secret with one
# before it answers), which is the build's cost, not the container's.
sync
