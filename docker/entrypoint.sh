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
#   - it does not exist yet                                   -> the owner of the nearest folder
#     that exists when that is not root (a state folder to be created inside a volume), else
#     `marimo`; nothing is chowned. A volume that mounts late at /app/state finds /app, which
#     is `marimo`'s, and the orchestrator waits for the volume.
#
# Edit mode saves notebooks in place, so the notebook folder (when it lies under /app, the
# image's WORKDIR) is handed to the same uid: only entries owned by someone else, never crossing
# into a mount (the state volume, secrets) below it. Started as non-root already (`--user`,
# Kubernetes runAsUser + fsGroup), nothing is changed and the orchestrator starts directly.
# Privileges are dropped with setpriv (util-linux, in every Debian image): no setuid helper and
# no new privileges afterwards.
#
# marimo, and so every notebook cell and terminal, runs as a user of its own (`notebook`, 1001)
# in the orchestrator's group: the orchestrator keeps CAP_SETUID, CAP_SETGID and CAP_KILL (and
# nothing else) to start and stop it (--marimo-user), and passes no capability to any child. The
# venv, caches and marimo's settings are shared through the group (umask 0002); the
# orchestrator's secrets (state/session-secret, its environment and memory) are not readable by
# marimo's user. Started as non-root, there is no second user: marimo runs as the orchestrator's.
set -euo pipefail

readonly image_user=marimo
readonly notebook_user=notebook
readonly app_dir=/app

say() { echo "marimo-orchestrator-entrypoint: $*" >&2; }

# Every fork costs milliseconds before the port is bound: lookups read /etc/passwd and
# /etc/group with builtins instead of id/getent/cut.
lookup_user() { # lookup_user name|uid VALUE -> user_name user_uid user_gid user_home
  local name _password uid gid _gecos home _shell
  while IFS=: read -r name _password uid gid _gecos home _shell; do
    if [[ ($1 == name && $name == "$2") || ($1 == uid && $uid == "$2") ]]; then
      user_name=$name user_uid=$uid user_gid=$gid user_home=$home
      return 0
    fi
  done </etc/passwd
  return 1
}
group_exists() {
  local _name _password gid _members
  while IFS=: read -r _name _password gid _members; do
    if [[ $gid == "$1" ]]; then return 0; fi
  done </etc/group
  return 1
}

# The folders the orchestrator will use, resolved as it does: flag, ORCHESTRATOR_* twin, Quix's
# variable, default. A flag takes a value unless it is one of these switches (whole flags only:
# the orchestrator accepts no abbreviations either).
# switches: made by `make readme-options` from orchestrator/options.py
readonly switches=' -h --help --record-installs --no-record-installs --trust-proxy --no-trust-proxy --sync-to-quix --no-sync-to-quix --metrics-public --no-metrics-public '
# end of switches
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
    --*=*) ;;
    --)
      if [[ -z $notebook_dir ]]; then notebook_dir=${args[i + 1]:-}; fi
      break
      ;;
    -*) if [[ $switches != *" $arg "* ]]; then i=$((i + 1)); fi ;;
    *) if [[ -z $notebook_dir ]]; then notebook_dir=$arg; fi ;;
  esac
  i=$((i + 1))
done
paths=$(realpath -m -- \
  "${state_dir:-${ORCHESTRATOR_STATE_DIR:-${Quix__Deployment__State__Path:-state}}}" \
  "${notebook_dir:-${ORCHESTRATOR_NOTEBOOK_DIR:-.}}")
state_dir=${paths%%$'\n'*}
notebook_dir=${paths#*$'\n'}
if [[ -n ${MARIMO_ORCHESTRATOR_ENTRYPOINT_DRY_RUN:-} ]]; then # what it would use; tests
  printf 'state_dir=%s\nnotebook_dir=%s\n' "$state_dir" "$notebook_dir"
  exit 0
fi

if ((EUID != 0)); then
  exec marimo-orchestrator "$@"
fi

notebook_uid=""
if lookup_user name "$notebook_user"; then
  notebook_uid=$user_uid
fi
lookup_user name "$image_user"
image_uid=$user_uid
run_uid=$user_uid
run_gid=$user_gid
# A state folder still to be created inside a volume takes the volume's owner.
probe=$state_dir
while [[ ! -e $probe && -n $probe ]]; do
  probe=${probe%/*}
done
if [[ -d $probe && -n $probe ]]; then
  owner=$(stat -c %u:%g -- "$probe")
  owner_uid=${owner%%:*}
  owner_gid=${owner#*:}
  if ((owner_uid != 0)); then
    run_uid=$owner_uid
    run_gid=$owner_gid
  elif [[ $probe == "$state_dir" ]] && ! chown "$run_uid:$run_gid" -- "$state_dir" 2>/dev/null; then
    say "cannot hand the root-owned $state_dir to $image_user; running as $image_user anyway"
  fi
fi

# A uid without a passwd entry breaks tools that look the user up (getpass, ssh, git): give it
# one, with a home of its own.
if ! group_exists "$run_gid"; then
  groupadd --gid "$run_gid" marimo-state
fi
if ! lookup_user uid "$run_uid"; then
  useradd --uid "$run_uid" --gid "$run_gid" --create-home --home-dir "/home/state-$run_uid" \
    --shell /usr/sbin/nologin "state-$run_uid"
  lookup_user uid "$run_uid"
elif ((run_uid != image_uid)) && [[ ! -d $user_home || $(stat -c %u -- "$user_home") != "$run_uid" ]]; then
  # An existing account whose home it cannot write (nobody: /nonexistent).
  user_home=/tmp/home-$run_uid
  install -d -m 0700 -o "$run_uid" -g "$run_gid" -- "$user_home"
fi

if [[ $notebook_dir == "$app_dir" || $notebook_dir == "$app_dir"/* ]] && [[ -d $notebook_dir ]]; then
  prune=(-path "$state_dir")
  while read -r _ _ _ _ mount_point _; do
    printf -v mount_point '%b' "$mount_point" # mountinfo escapes spaces as \040
    if [[ $mount_point == "$notebook_dir"/* ]]; then
      prune+=(-o -path "$mount_point")
    fi
  done </proc/self/mountinfo
  find "$notebook_dir" \( "${prune[@]}" \) -prune -o ! -uid "$run_uid" \
    -exec chown -h "$run_uid:$run_gid" -- {} + \
    || say "could not hand every file of $notebook_dir to uid $run_uid; edits may not save"
  # marimo saves as its own user, in the orchestrator's group.
  find "$notebook_dir" \( "${prune[@]}" \) -prune -o ! -type l ! -perm -g=w \
    -exec chmod g+rwX -- {} + \
    || say "could not make every file of $notebook_dir group-writable; edits may not save"
fi

# marimo as its own user (see the top of this file), unless told otherwise
# (ORCHESTRATOR_MARIMO_USER= empty: as the orchestrator's user).
caps=()
if [[ -z ${ORCHESTRATOR_MARIMO_USER+set} && -n $notebook_uid ]]; then
  if [[ $notebook_uid == "$run_uid" ]]; then
    say "the state folder belongs to $notebook_user's uid: marimo runs as the orchestrator's user"
  else
    export ORCHESTRATOR_MARIMO_USER=$notebook_uid
  fi
fi
if [[ -n ${ORCHESTRATOR_MARIMO_USER:-} ]]; then
  caps=("--inh-caps=+setuid,+setgid,+kill" "--ambient-caps=+setuid,+setgid,+kill")
  # Folders an earlier image made without group write: once, so marimo can install and save.
  for shared in venv cache config; do
    if [[ -d $state_dir/$shared && $(stat -c %A -- "$state_dir/$shared") != ?????w* ]]; then
      chmod -R g+rwX -- "$state_dir/$shared" 2>/dev/null \
        || say "cannot make $state_dir/$shared group-writable; marimo's installs may fail"
    fi
  done
fi

say "running as $user_name ($run_uid:$run_gid), marimo as uid" \
  "${ORCHESTRATOR_MARIMO_USER:-$run_uid}; state in $state_dir"
export HOME=$user_home USER=$user_name LOGNAME=$user_name
umask 0002
exec setpriv --reuid="$run_uid" --regid="$run_gid" --clear-groups "${caps[@]}" --no-new-privs \
  -- marimo-orchestrator "$@"
