#!/usr/bin/env bash
# Entry point of the marimo-orchestrator image (run by tini, PID 1): start the orchestrator as an
# unprivileged user that can write the state volume, then get out of the way (exec).
#
# Why not simply `USER marimo`? A state volume's owner is not ours to choose: on Quix (network
# filesystems) and with many volume drivers it belongs to some other uid with mode 0755, and a
# fixed image user then cannot write it; packages would not persist. Quix's own samples detect
# the folder's owner at start and adapt; so does this script, when the container starts as root:
#
#   - the state folder exists and belongs to a non-root uid  -> run as that uid:gid;
#   - it belongs to root (a fresh volume, a new empty PVC)     -> give the folder itself to the
#     image's user `marimo` (one chown, not recursive) and run as `marimo`; if root may not
#     chown it (root-squashed NFS), still run as `marimo`: the orchestrator then says on
#     /-/status that state is not persistent, and why;
#   - it does not exist yet (a volume that mounts late)       -> run as `marimo`; the orchestrator
#     waits for it.
#
# Edit mode saves notebooks in place, so the notebook folder (when it lies under /app, the
# image's WORKDIR) is handed to the same uid: only entries owned by someone else, never crossing
# into a mount (the state volume, secrets) below it. Started as non-root already (`--user`,
# Kubernetes runAsUser + fsGroup), nothing is changed and the orchestrator starts directly.
# Privileges are dropped with setpriv (util-linux, in every Debian image): no setuid helper and
# no new privileges afterwards.
set -euo pipefail

readonly image_user=marimo
readonly app_dir=/app

say() { echo "marimo-orchestrator-entrypoint: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  exec marimo-orchestrator "$@"
fi

# The folders the orchestrator will use, resolved as it does: flag, ORCHESTRATOR_* twin, Quix's
# variable, default. Every option of the CLI takes a value.
state_dir=""
notebook_dir=""
args=("$@")
i=0
while ((i < ${#args[@]})); do
  arg=${args[i]}
  case $arg in
    --state-dir=*) state_dir=${arg#*=} ;;
    --state-dir)
      state_dir=${args[i + 1]:-}
      i=$((i + 1))
      ;;
    -h | --help | --*=*) ;;
    -*) i=$((i + 1)) ;;
    *) if [[ -z $notebook_dir ]]; then notebook_dir=$arg; fi ;;
  esac
  i=$((i + 1))
done
state_dir=$(realpath -m -- "${state_dir:-${ORCHESTRATOR_STATE_DIR:-${Quix__Deployment__State__Path:-state}}}")
notebook_dir=$(realpath -m -- "${notebook_dir:-${ORCHESTRATOR_NOTEBOOK_DIR:-.}}")

run_uid=$(id -u "$image_user")
run_gid=$(id -g "$image_user")
# A state folder still to be created inside a volume takes the volume's owner.
probe=$state_dir
while [[ ! -e $probe && $probe != / ]]; do
  probe=$(dirname -- "$probe")
done
if [[ -d $probe && $probe != / ]]; then
  owner_uid=$(stat -c %u -- "$probe")
  owner_gid=$(stat -c %g -- "$probe")
  if ((owner_uid != 0)); then
    run_uid=$owner_uid
    run_gid=$owner_gid
  elif [[ $probe == "$state_dir" ]] && ! chown "$run_uid:$run_gid" -- "$state_dir" 2>/dev/null; then
    say "cannot hand the root-owned $state_dir to $image_user; running as $image_user anyway"
  fi
fi

# A uid without a passwd entry breaks tools that look the user up (getpass, ssh, git): give it
# one, with a home of its own.
if ! getent group "$run_gid" >/dev/null; then
  groupadd --gid "$run_gid" marimo-state
fi
if ! getent passwd "$run_uid" >/dev/null; then
  useradd --uid "$run_uid" --gid "$run_gid" --create-home --home-dir "/home/state-$run_uid" \
    --shell /usr/sbin/nologin "state-$run_uid"
fi
home=$(getent passwd "$run_uid" | cut -d: -f6)
if [[ ! -d $home || $(stat -c %u -- "$home") -ne $run_uid ]]; then
  home=/tmp/home-$run_uid
  install -d -m 0700 -o "$run_uid" -g "$run_gid" -- "$home"
fi
user_name=$(getent passwd "$run_uid" | cut -d: -f1)

if [[ $notebook_dir == "$app_dir" || $notebook_dir == "$app_dir"/* ]] && [[ -d $notebook_dir ]]; then
  prune=(-path "$state_dir")
  while read -r _ _ _ _ mount_point _; do
    mount_point=$(printf '%b' "$mount_point") # mountinfo escapes spaces as \040
    if [[ $mount_point == "$notebook_dir"/* ]]; then
      prune+=(-o -path "$mount_point")
    fi
  done </proc/self/mountinfo
  find "$notebook_dir" \( "${prune[@]}" \) -prune -o ! -uid "$run_uid" -print0 \
    | xargs -0 -r chown -h "$run_uid:$run_gid" -- \
    || say "could not hand every file of $notebook_dir to uid $run_uid; edits may not save"
fi

say "running as $user_name ($run_uid:$run_gid); state in $state_dir"
export HOME=$home USER=$user_name LOGNAME=$user_name
exec setpriv --reuid="$run_uid" --regid="$run_gid" --clear-groups --no-new-privs \
  -- marimo-orchestrator "$@"
