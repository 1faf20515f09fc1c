#!/bin/bash
# bai-bridge dev cluster: a real Slurm 24.11 + slurmdbd/MariaDB + slurmrestd (JWT) + Apptainer cluster
# inside a Debian trixie root on a Debian 12 host without systemd, as root. Facts and timings behind each
# choice: docs/dev-cluster.md. Usage: testbed.sh up | down | status | install | start | stop | umount | enter CMD...
# Every step is idempotent: `up` on a running cluster only checks it.
set -euo pipefail

R=${BRIDGE_DEV_ROOT:-/srv/slurmroot}
NODES=${BRIDGE_DEV_NODES:-4}           # slurmd instances on 127.0.0.1 (multiple-slurmd style)
CPUS=${BRIDGE_DEV_CPUS:-4}             # advertised per node (config_overrides: may exceed real cores)
MEM=${BRIDGE_DEV_MEM_MB:-4000}         # MB per node
GPUS=${BRIDGE_DEV_GPUS:-2}             # fake GPUs per node: char devices /dev/fakegpuN (major 195)
SHARDS=${BRIDGE_DEV_SHARDS:-4}         # gres/shard units per GPU (cuda.shares; sessions.shards_per_gpu)
NVIDIA=${BRIDGE_DEV_NVIDIA:-auto}      # real NVIDIA GPUs of this host as node g1, partition "nvidia": auto|on|off
CGROUP=${BRIDGE_DEV_CGROUP:-auto}      # cgroup device isolation (ConstrainDevices): auto = where the host's cgroups allow
MIRROR=${BRIDGE_DEV_MIRROR:-http://deb.debian.org/debian}
CONTAINERS=${BRIDGE_DEV_CONTAINERS:-$(cd "$(dirname "$0")/../.." && pwd)/containers}
PLUGINS=${BRIDGE_DEV_PLUGINS:-$(cd "$(dirname "$0")/../.." && pwd)/slurm_plugins}
CLUSTER=${BRIDGE_DEV_CLUSTER:-devcluster}
CTLD_PORT=${BRIDGE_DEV_CTLD_PORT:-7817}; DBD_PORT=${BRIDGE_DEV_DBD_PORT:-7819}
REST_PORT=${BRIDGE_DEV_REST_PORT:-7820}; DB_PORT=${BRIDGE_DEV_DB_PORT:-3307}
SSH_PORT=${BRIDGE_DEV_SSH_PORT:-2222}; NODE_PORT0=${BRIDGE_DEV_NODE_PORT0:-17101}
USERS=${BRIDGE_DEV_USERS:-"alice:1001 bob:1002 hpcadmin:1003"}
PKGS="munge slurm-wlm slurmctld slurmd slurm-client slurmdbd slurmrestd slurm-wlm-jwt-plugin slurm-wlm-mysql-plugin
      libmariadb3 curl python3 squashfuse busybox-static debootstrap openssh-server openssh-client ca-certificates procps acl"
APPTAINER=apptainer/sid                # Apptainer needs sid's build (trixie has none)
# The accounting database runs from the host: Debian 12's MariaDB 10.11 (why: docs/dev-cluster.md)
HOST_PKGS="mariadb-server-core mariadb-client-core"
DB_DIR=$R/var/lib/bridge-mariadb; DB_RUN=$R/run/bridge-mariadb; DB_LOG=$R/var/log/bridge-mariadb.log
VERSIONS=${BRIDGE_DEV_VERSIONS:-$(dirname "$(readlink -f "$0")")/tested-versions.txt}   # what it was tested with
INSTALLED_MARK=$R/etc/bridge-devcluster.installed   # content: the package list it was built with

log() { printf '[dev-cluster] %s\n' "$*" >&2; }
ts() { date +%s%N; }
step() { local name=$1 t0; shift; t0=$(ts); "$@"; log "$(printf '%-22s %6d ms' "$name" $(( ($(ts) - t0) / 1000000 )))"; }

# Run a command inside the root with a real pivot_root: apptainer refuses a plain chroot.
enter() {
  unshare --mount --propagation private -- /bin/bash -c '
    R="$0"; cd "$R" && mkdir -p .oldroot && pivot_root . .oldroot && umount -l /.oldroot && cd / &&
    exec /usr/sbin/chroot / /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         HOME=/root TERM=dumb LANG=C.UTF-8 "$@"' "$R" "$@"
}

mounts_up() {
  mountpoint -q "$R" || mount --bind "$R" "$R"
  mount --make-private "$R"
  for d in proc sys dev dev/pts; do mountpoint -q "$R/$d" || mount --bind "/$d" "$R/$d"; done
  # the cgroup hierarchies are mounts of their own under /sys: slurmd's cgroup plugins need them
  if [ -d /sys/fs/cgroup ] && mountpoint -q /sys/fs/cgroup && ! mountpoint -q "$R/sys/fs/cgroup"; then
    mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
  fi
  mountpoint -q "$R/run" || mount -t tmpfs tmpfs "$R/run"
  mountpoint -q "$R/tmp" || mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
}
mounts_down() {
  local d
  for d in tmp run dev/pts dev sys/fs/cgroup sys proc; do if mountpoint -q "$R/$d"; then umount -l "$R/$d"; fi; done
  if mountpoint -q "$R"; then umount -l "$R"; fi
}

apt_host() {  # apt-get install on the host, updating the lists first where they are missing
  [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ] || apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades "$@" >/dev/null
}

host_prereqs() {
  local missing=() p
  for c in debootstrap unshare nsenter mknod bc; do command -v "$c" >/dev/null || missing+=("$c"); done
  if [ ${#missing[@]} -gt 0 ]; then apt_host debootstrap bc util-linux; fi
  missing=()
  for p in $HOST_PKGS; do
    dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ] || apt-get update -q >/dev/null
    # shellcheck disable=SC2046
    apt_host $(pinned host "$(apt-cache madison "${missing[@]}" 2>/dev/null)" "${missing[@]}") ||
      { log "pinned versions of $HOST_PKGS failed to install; taking the archive's"; apt_host "${missing[@]}"; }
  fi
}

# ---- versions: what the cluster was tested with (tested-versions.txt), pinned where the archive still has it ----

tested_version() { [ -f "$VERSIONS" ] && awk -v w="$1" -v p="$2" '$1 == w && $2 == p {print $3}' "$VERSIONS"; }

pinned() {  # WHERE MADISON PKG...: each package as pkg=version where `apt-cache madison` (MADISON) still
  # lists its tested version, else as given (pkg or pkg/suite)
  local where=$1 madison=$2 spec name want; shift 2
  for spec in "$@"; do
    name=${spec%%/*}; want=$(tested_version "$where" "$name")
    if [ -n "$want" ] && echo "$madison" | awk -F' *[|] *' -v n="$name" -v v="$want" \
         '{sub(/^ +/, "", $1)} $1 == n && $2 == v {found=1} END {exit !found}'; then
      echo "$name=$want"
    else
      echo "$spec"
    fi
  done
}

installed_versions() {  # WHERE: "WHERE package version" for every package the cluster installs by name
  if [ "$1" = root ]; then
    # shellcheck disable=SC2086
    chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' $PKGS ${APPTAINER%%/*} 2>/dev/null | sed 's/^/root /'
  else
    # shellcheck disable=SC2086
    dpkg-query -W -f '${Package} ${Version}\n' $HOST_PKGS 2>/dev/null | sed 's/^/host /'
  fi
}

drift() {  # print every package whose installed version is not the tested one; exit 1 if any
  local where name have want n=0
  while read -r where name have; do
    want=$(tested_version "$where" "$name")
    if [ "$have" != "$want" ]; then
      echo "drift: $where $name ${have:-missing}, tested with ${want:-nothing recorded} ($VERSIONS)"; n=$((n + 1))
    fi
  done < <(installed_versions root; installed_versions host)
  [ $n = 0 ]
}

record_versions() {  # rewrite tested-versions.txt from what is installed now (after a green .ci/run)
  { echo "# Packages the dev cluster was built and tested with: 'root' in the Debian trixie root, 'host' on the"
    echo "# Debian 12 host. \`dev-cluster up\` installs these versions while the archive has them;"
    echo "# \`dev-cluster status\` names any drift. Rewritten by: bai-bridge dev-cluster versions --record"
    installed_versions root; installed_versions host
  } > "$VERSIONS.tmp" && mv "$VERSIONS.tmp" "$VERSIONS"
}

do_debootstrap() {
  [ -x "$R/usr/bin/apt-get" ] && return 0
  mkdir -p "$R"
  debootstrap --variant=minbase trixie "$R" "$MIRROR" >/tmp/bridge-debootstrap.log 2>&1 ||
    { log "debootstrap failed, see /tmp/bridge-debootstrap.log"; tail -5 /tmp/bridge-debootstrap.log >&2; exit 1; }
}

configure_apt() {
  echo "deb $MIRROR sid main" > "$R/etc/apt/sources.list.d/sid.list"
  printf 'Package: *\nPin: release n=sid\nPin-Priority: 100\n' > "$R/etc/apt/preferences.d/sid-low"
  echo 'Acquire::Check-Valid-Until "false";' > "$R/etc/apt/apt.conf.d/99no-valid-until"  # clock vs sid Release
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  cp /etc/hosts "$R/etc/hosts"; cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
}

install_pkgs() {
  local mark specs
  mark="$(echo $PKGS $APPTAINER) $({ cat "$VERSIONS" 2>/dev/null || true; } | sha256sum | cut -c1-16)"
  if [ -f "$INSTALLED_MARK" ] && [ "$(cat "$INSTALLED_MARK")" = "$mark" ]; then return 0; fi
  enter apt-get update -q >/tmp/bridge-chroot-apt.log 2>&1
  # shellcheck disable=SC2086
  specs=$(pinned root "$(enter apt-cache madison $PKGS ${APPTAINER%%/*} 2>/dev/null)" $PKGS $APPTAINER)
  # shellcheck disable=SC2086
  if ! enter env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades \
         $specs >>/tmp/bridge-chroot-apt.log 2>&1; then
    log "the tested versions did not install together (see /tmp/bridge-chroot-apt.log); taking the archive's"
    # shellcheck disable=SC2086
    enter env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS $APPTAINER \
      >>/tmp/bridge-chroot-apt.log 2>&1 ||
      { log "apt-get in the root failed: /tmp/bridge-chroot-apt.log"; tail -5 /tmp/bridge-chroot-apt.log >&2; exit 1; }
  fi
  echo "$mark" > "$INSTALLED_MARK"
}

add_user() {  # name uid: same uid on the host and in the root, so files on shared paths agree
  local name=$1 uid=$2
  id "$name" >/dev/null 2>&1 || useradd -m -u "$uid" -s /bin/bash "$name"
  enter bash -c "id $name >/dev/null 2>&1 || useradd -m -u $uid -s /bin/bash $name"
}

nvidia_count() {  # real NVIDIA GPUs on this host (0 without a driver, or with BRIDGE_DEV_NVIDIA=off)
  [ "$NVIDIA" = off ] && { echo 0; return; }
  local n; n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU [0-9]' || true)
  if [ "$NVIDIA" = on ] && [ "${n:-0}" = 0 ]; then log "BRIDGE_DEV_NVIDIA=on, but nvidia-smi -L lists no GPU"; exit 1; fi
  echo "${n:-0}"
}

cgroup_on() {  # device isolation needs a devices controller: cgroup v1's (this machine kind: hybrid) or v2
  case "$CGROUP" in
    on) return 0 ;;
    off) return 1 ;;
    *) cgroup_writable ;;
  esac
}

cgroup_writable() {  # slurmd must be able to create cgroups where it lives: probe with a directory of our own
  local dir
  if [ -e /sys/fs/cgroup/devices/devices.allow ]; then dir=/sys/fs/cgroup/devices   # v1 (or hybrid)
  elif [ -e /sys/fs/cgroup/cgroup.controllers ]; then dir=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
  else return 1
  fi
  mkdir "$dir/bridge-probe-$$" 2>/dev/null && rmdir "$dir/bridge-probe-$$"
}

write_configs() {
  local last=$((NODE_PORT0 + NODES - 1)) u cgroups=0 proctrack=proctrack/linuxproc task=task/none
  if cgroup_on; then cgroups=1; proctrack=proctrack/cgroup; task=task/cgroup; fi
  for u in $USERS; do add_user "${u%%:*}" "${u##*:}"; done
  enter bash -c 'id slurmrest >/dev/null 2>&1 || useradd -r -s /usr/sbin/nologin slurmrest'
  mkdir -p "$R"/var/spool/slurmctld "$R"/var/spool/slurmd "$R"/var/log/slurm "$R"/srv/images "$R"/srv/shared
  mkdir -p "$R/srv/shared/bridge" "$R/srv/shared/vfolders"   # session folders, virtual folders (storage host)
  chmod 1777 "$R/srv/shared" "$R/srv/shared/bridge" "$R/srv/shared/vfolders"
  # registry images are pulled and built unprivileged, as nobody (images.pull_user), into its own cache; a
  # cache of a root built before holds root's unpacked sandboxes: theirs now, and no setuid file left in them
  if [ -d "$R/srv/images/.cache" ] && [ "$(stat -c %U "$R/srv/images/.cache")" != nobody ]; then
    find "$R/srv/images/.cache" -xdev -perm /6000 -type f -exec chmod ug-s {} +
    find "$R/srv/images/.cache" -xdev \( -type b -o -type c \) -delete
    enter chown -R nobody:nogroup /srv/images/.cache
  fi
  enter install -d -o nobody -g nogroup -m 0755 /srv/images/.cache
  # slurm_plugins/: the gateways' job start/end notices (each gateway's `dev up` drops its url, job tag prefix
  # and secret into bridge-notify.d, readable by slurm alone)
  install -d -m 0755 "$R/etc/slurm/bridge"
  install -m 0755 "$PLUGINS/bridge_notify.py" "$PLUGINS/bridge_notify.sh" "$R/etc/slurm/bridge/"
  enter install -d -o slurm -g slurm -m 0700 /etc/slurm/bridge-notify.d
  # and job_submit.lua: a session's signed job tag becomes the job's admin comment; a forged one is refused
  install -m 0644 "$PLUGINS/job_submit.lua" "$R/etc/slurm/job_submit.lua"
  cat > "$R/etc/slurm/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=slurm
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=/var/spool/slurmctld/jwt_hs256.key
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=$proctrack
TaskPlugin=$task
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
PriorityType=priority/multifactor
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations,limits,qos,safe
AccountingStorageTRES=gres/gpu,gres/shard
AccountingStoreFlags=job_comment
PrologSlurmctld=/etc/slurm/bridge/bridge_notify.sh
EpilogSlurmctld=/etc/slurm/bridge/bridge_notify.sh
JobSubmitPlugins=lua
GresTypes=gpu,shard
NodeName=n[1-$NODES] NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=[$NODE_PORT0-$last] CPUs=$CPUS RealMemory=$MEM Gres=gpu:$GPUS,shard:$((GPUS * SHARDS)) State=UNKNOWN
PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=n[1-$NODES] MaxTime=INFINITE State=UP
CONF
  if [ "$NGPU" -gt 0 ]; then  # the host's real GPUs: one more node, alone in its own partition
    cat >> "$R/etc/slurm/slurm.conf" <<CONF
NodeName=g1 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$((last + 1)) CPUs=$CPUS RealMemory=$MEM Gres=gpu:$NGPU State=UNKNOWN
PartitionName=nvidia Nodes=g1 MaxTime=INFINITE State=UP
CONF
  fi
  if [ $cgroups = 1 ]; then
    printf 'CgroupPlugin=autodetect\nIgnoreSystemd=yes\nConstrainDevices=yes\n' > "$R/etc/slurm/cgroup.conf"
  else
    echo 'CgroupPlugin=disabled' > "$R/etc/slurm/cgroup.conf"
  fi
  local i a b g
  { echo AutoDetect=off
    for i in $(seq 1 "$NODES"); do
      a=$(( (i-1)*GPUS )); b=$(( i*GPUS-1 ))
      echo "NodeName=n$i Name=gpu File=/dev/fakegpu[$a-$b]"
      for g in $(seq "$a" "$b"); do echo "NodeName=n$i Name=shard Count=$SHARDS File=/dev/fakegpu$g"; done
    done
    if [ "$NGPU" -gt 0 ]; then echo "NodeName=g1 Name=gpu File=/dev/nvidia[0-$((NGPU - 1))]"; fi
  } > "$R/etc/slurm/gres.conf"
  cat > "$R/etc/slurm/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=/var/spool/slurmctld/jwt_hs256.key
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
CONF
  [ -s "$R/var/spool/slurmctld/jwt_hs256.key" ] || dd if=/dev/urandom of="$R/var/spool/slurmctld/jwt_hs256.key" bs=32 count=1 status=none
  enter bash -c 'chown slurm:slurm /var/spool/slurmctld /var/log/slurm /var/spool/slurmctld/jwt_hs256.key /etc/slurm/slurmdbd.conf
                 chmod 600 /var/spool/slurmctld/jwt_hs256.key /etc/slurm/slurmdbd.conf
                 sed -i "s/^root default capabilities = full/root default capabilities = file/" /etc/apptainer/apptainer.conf
                 [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null'
}

gateway_ssh_key() {  # the gateway's key for the login node (sshd on 127.0.0.1:$SSH_PORT in the root)
  local u home
  mkdir -p "$R/etc/bridge"
  [ -f "$R/etc/bridge/gateway_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C bai-bridge-gateway -f "$R/etc/bridge/gateway_ed25519"
  for u in root $USERS; do
    u=${u%%:*}; home=$(enter getent passwd "$u" | cut -d: -f6)
    enter bash -c "mkdir -p $home/.ssh && grep -qF '$(cat "$R/etc/bridge/gateway_ed25519.pub")' $home/.ssh/authorized_keys 2>/dev/null ||
      echo '$(cat "$R/etc/bridge/gateway_ed25519.pub")' >> $home/.ssh/authorized_keys
      chown -R $u: $home/.ssh && chmod 700 $home/.ssh && chmod 600 $home/.ssh/authorized_keys"
  done
  echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$R/etc/ssh/ssh_host_ed25519_key.pub")" > "$R/etc/bridge/known_hosts"
}

fake_gpus() {  # character devices on the host /dev (devtmpfs, bind-mounted into the root)
  # major 195, as NVIDIA's; next to real GPUs 241 (local use), so that a fake never aliases /dev/nvidiaN
  local n=$((NODES * GPUS - 1)) g major=195
  [ "$NGPU" -gt 0 ] && major=241
  for g in $(seq 0 "$n"); do
    if [ -e /dev/fakegpu$g ] && [ "$((16#$(stat -c %t /dev/fakegpu$g)))" != $major ]; then rm -f /dev/fakegpu$g; fi
    [ -e /dev/fakegpu$g ] || mknod -m 666 /dev/fakegpu$g c $major $g
  done
  # users mount SIF images with squashfuse: /dev/fuse is 0666 on a Debian host (udev), 0600 on this kind
  if [ -c /dev/fuse ]; then chmod 666 /dev/fuse; fi
}

nvidia_driver() {  # the host's nvidia-smi and driver libraries in the root, where `apptainer --nv` finds them
  local dir=$R/usr/local/lib/nvidia-host soname path
  if [ "$NGPU" = 0 ]; then  # none (any more): no stale driver copy for --nv to bind
    if [ -e "$dir" ]; then rm -rf "$dir" "$R/usr/local/bin/nvidia-smi" "$R/etc/ld.so.conf.d/zz-nvidia-host.conf"; enter ldconfig; fi
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -L "$(command -v nvidia-smi)" "$R/usr/local/bin/nvidia-smi"
  # the compute libraries of the driver, under the sonames the host's ld cache knows them by
  ldconfig -p | awk '/x86-64/ && $1 ~ /^lib(cuda\.so|cudadebugger\.so|nvidia-|nvcuvid|nvoptix)/ {print $1, $NF}' |
    while read -r soname path; do cp -L "$path" "$dir/$soname"; done
  echo /usr/local/lib/nvidia-host > "$R/etc/ld.so.conf.d/zz-nvidia-host.conf"
  enter ldconfig
}

section() {  # the body of a %section of a definition file
  awk -v want="%$2" '/^%/{on=($1==want); next} on' "$1"
}

finish_image() {  # run a definition's %post in the sandbox with exec --writable (`apptainer build` with a
  # %post needs capabilities this machine kind lacks), then merge its %environment and %labels
  local def=$1 name=$2
  # pip and apt inside trust what the host trusts (a site proxy's CA, for instance)
  cp /etc/ssl/certs/ca-certificates.crt "$R/srv/images/.defs/host-ca.crt" || return 1
  section "$def" post > "$R/srv/images/.defs/$name.post.sh" || return 1
  if [ -s "$R/srv/images/.defs/$name.post.sh" ]; then
    enter apptainer -s exec --writable --bind /srv/images/.defs:/mnt \
      --env PIP_CERT=/mnt/host-ca.crt,SSL_CERT_FILE=/mnt/host-ca.crt \
      "/srv/images/$name.tmp" /bin/sh -e "/mnt/$name.post.sh" || return 1
  fi
  section "$def" environment >> "$R/srv/images/$name.tmp/.singularity.d/env/90-environment.sh" || return 1
  section "$def" labels | enter python3 -c '
import json, sys
path = sys.argv[1] + "/.singularity.d/labels.json"
labels = json.load(open(path))
for line in sys.stdin:
    key, _, value = line.strip().partition(" ")
    if key:
        labels[key] = value.strip()
json.dump(labels, open(path, "w"), indent=2)' "/srv/images/$name.tmp" || return 1
}

base_image() {  # Bootstrap: debootstrap and the like: `apptainer build` without %post, then finish_image
  local def=$1 name=$2
  awk '/^%/{skip=($1=="%post")} !skip' "$def" > "$R/srv/images/.defs/$name.def" || return 1
  enter apptainer -s build --force --sandbox "/srv/images/$name.tmp" "/srv/images/.defs/$name.def" || return 1
  finish_image "$def" "$name"
}

derived_image() {  # Bootstrap: localimage: a copy of the base sandbox, then finish_image
  local def=$1 name=$2 base
  base=$(awk '/^From:/{print $2; exit}' "$def")
  [ -d "$R$base" ] || { echo "base image $base is missing"; return 1; }
  cp -a "$R$base" "$R/srv/images/$name.tmp" || return 1
  finish_image "$def" "$name"
}

build_images() {  # each definition in containers/ becomes a sandbox image, rebuilt when it (or its base) changes
  local def name sum
  mkdir -p "$R/srv/images/.defs"
  # images built from scratch first, then the ones derived from them (Bootstrap: localimage)
  local defs=() d
  for d in "$CONTAINERS"/*.def; do [ -e "$d" ] && ! grep -q '^Bootstrap: *localimage' "$d" && defs+=("$d"); done
  for d in "$CONTAINERS"/*.def; do [ -e "$d" ] && grep -q '^Bootstrap: *localimage' "$d" && defs+=("$d"); done
  for def in "${defs[@]}"; do
    name=$(basename "$def" .def)
    # a derived image's key covers its base's key too, so a changed base rebuilds what is built on it
    local from; from=$(awk '/^From:/{print $2; exit}' "$def")
    sum=$( { cat "$def"; [ -n "$from" ] && cat "$R$from/.bridge-def-sha" 2>/dev/null; true; } | sha256sum | cut -c1-16)
    if [ -f "$R/srv/images/$name/.bridge-def-sha" ] && [ "$(cat "$R/srv/images/$name/.bridge-def-sha")" = "$sum" ]; then continue; fi
    rm -rf "$R/srv/images/$name.tmp"
    local how=base_image
    grep -q '^Bootstrap: *localimage' "$def" && how=derived_image
    $how "$def" "$name" >"/tmp/bridge-image-$name.log" 2>&1 ||
      { log "image $name failed: /tmp/bridge-image-$name.log"; tail -5 "/tmp/bridge-image-$name.log" >&2; exit 1; }
    rm -rf "$R/srv/images/$name"; mv "$R/srv/images/$name.tmp" "$R/srv/images/$name"
    echo "$sum" > "$R/srv/images/$name/.bridge-def-sha"
    log "built image /srv/images/$name from $def"
  done
}

node_names() {  # every slurmd of the cluster: n1..nN, and g1 with the host's real GPUs
  seq -f 'n%g' 1 "$NODES"
  if [ "$NGPU" -gt 0 ]; then echo g1; fi
}

pid_of() {  # the first line of a pidfile: a daemon that re-executes itself on `scontrol reconfigure` writes
  # its new pid over the old one without truncating, so "543\n1\n" is what a 5-digit pid leaves behind
  local p; p=$(head -n1 "$1" 2>/dev/null) || return 1
  case $p in ''|*[!0-9]*) return 1 ;; esac
  echo "$p"
}

alive() {  # pidfile inside the root's /run; a zombie counts as dead (PID 1 here reaps late)
  local p st; p=$(pid_of "$R/run/$1") || return 1
  st=$(awk '/^State/{print $2}' "/proc/$p/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

stale_slurmds() {  # a node the config no longer has (g1 once the GPUs are gone) must not keep running
  local f n
  for f in "$R"/run/slurmd-*.pid; do
    [ -e "$f" ] || continue
    n=${f##*/slurmd-}; n=${n%.pid}
    node_names | grep -qx "$n" || { kill "$(pid_of "$f")" 2>/dev/null || true; rm -f "$f"; }
  done
}

# ---- daemons: each started when it does not serve, then checked; a failure names the daemon and its log ----

fail_daemon() {  # NAME LOG WHY: the daemon that does not serve, why, and the end of its own log
  local name=$1 logfile=$2 why=$3
  log "$name does not serve: $why"
  if [ -s "$logfile" ]; then
    log "last lines of ${logfile#"$R"} (in $R):"
    tail -n 15 "$logfile" | sed 's/^/    /' >&2
  else
    log "(its log ${logfile#"$R"} is empty or missing)"
  fi
  exit 1
}

log_lines() { wc -l < "$1" 2>/dev/null || echo 0; }   # where a log stands before a start

wait_serving() {  # NAME LOG SINCE PIDFILE SECONDS CHECK...: poll CHECK until it succeeds; give up at once when
  # the daemon's process is gone or its log after line SINCE says it cannot go on (FAILED_LOG, a regex:
  # "fatal:" by default), else after SECONDS
  local name=$1 logfile=$2 since=$3 pidfile=$4 seconds=$5 i; shift 5
  for i in $(seq 1 $((seconds * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    if [ "$i" -gt 50 ] && [ -n "$pidfile" ] && ! alive "$pidfile"; then
      fail_daemon "$name" "$logfile" "its process exited"
    fi
    if tail -n +"$((since + 1))" "$logfile" 2>/dev/null | grep -Eq "${FAILED_LOG:-fatal:}"; then
      fail_daemon "$name" "$logfile" "it cannot go on (its log, below)"
    fi
    sleep 0.1
  done
  fail_daemon "$name" "$logfile" "no answer within $seconds s"
}

# each check is silent: it answers with its exit status only
db_sql() { mariadb --no-defaults --socket="$DB_RUN/mysqld.sock" -u root "$@"; }
db_serves() { db_sql -N -e 'SELECT 1' >/dev/null 2>&1; }
munge_serves() { { chroot "$R" munge -n | chroot "$R" unmunge; } >/dev/null 2>&1; }
dbd_serves() { timeout 10 chroot "$R" sacctmgr -n -P show cluster format=cluster 2>/dev/null; }
ctld_serves() { timeout 10 chroot "$R" scontrol ping 2>/dev/null | grep -q 'is UP'; }
slurmd_serves() {  # the node answers and is in service (not down, drained or not responding: no '*')
  local st; st=$(timeout 10 chroot "$R" sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n1)
  case "$st" in idle|mixed|allocated|completing|planned|reserved) return 0 ;; *) return 1 ;; esac
}
restd_serves() {  # slurmrestd answers its OpenAPI description to a JWT of ours
  local token; token=$(chroot "$R" scontrol token username=slurm lifespan=60 2>/dev/null | cut -d= -f2)
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "X-SLURM-USER-NAME: slurm" -H "X-SLURM-USER-TOKEN: $token" \
       "http://127.0.0.1:$REST_PORT/openapi/v3" 2>/dev/null)" = 200 ]
}
sshd_serves() { timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT && head -c 8 <&3" 2>/dev/null | grep -q '^SSH-2.0'; }

start_db() {  # the accounting database: Debian 12's own MariaDB on the host, its data in the root (why:
  # docs/dev-cluster.md); a root built before kept an in-root MariaDB, which is stopped for good
  local legacy since fresh=0
  if legacy=$(pid_of "$R/run/mysqld/mysqld.pid") && kill "$legacy" 2>/dev/null; then
    log "stopping the root's own MariaDB (pid $legacy): the accounting database now runs from the host"
    for _ in $(seq 1 150); do kill -0 "$legacy" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$R/run/mysqld/mysqld.pid"
  mkdir -p "$DB_RUN" "$DB_DIR"
  id mysql >/dev/null 2>&1 || useradd -r -M -d /nonexistent -s /usr/sbin/nologin mysql
  chown mysql:mysql "$DB_RUN" "$DB_DIR"
  if ! db_serves; then
    since=$(log_lines "$DB_LOG")
    if [ ! -d "$DB_DIR/mysql" ]; then
      mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --skip-test-db \
        --auth-root-authentication-method=socket >>"$DB_LOG" 2>&1 ||
        fail_daemon mariadb "$DB_LOG" "mariadb-install-db failed"
      fresh=1
    fi
    rm -f "$DB_RUN/mysqld.pid"
    # the values slurmdbd asks for (else it logs "Database settings not recommended")
    (setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --port="$DB_PORT" \
       --bind-address=127.0.0.1 --skip-name-resolve --socket="$DB_RUN/mysqld.sock" --pid-file="$DB_RUN/mysqld.pid" \
       --log-error="$DB_LOG" --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
       --innodb-lock-wait-timeout=900 --max-allowed-packet=16M </dev/null >/dev/null 2>&1 &)
    wait_serving mariadb "$DB_LOG" "$since" bridge-mariadb/mysqld.pid 60 db_serves
  fi
  # the database made here, not by slurmdbd: its first connection after creating it fails on the client's
  # TLS default against a server without TLS, and it retries only 5 s later
  db_sql -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
             CREATE DATABASE IF NOT EXISTS slurm_acct_db;
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
    fail_daemon mariadb "$DB_LOG" "cannot create slurmdbd's database user"
  if [ $fresh = 1 ]; then  # a new accounting database: slurmctld's saved cluster id and jobs belong to the old one
    stop_slurm
    find "$R/var/spool/slurmctld" -mindepth 1 ! -name jwt_hs256.key -delete
  fi
}

start_munge() {
  local logfile=$R/var/log/munge/munged.log since
  munge_serves && return 0
  since=$(log_lines "$logfile")
  enter bash -c 'mkdir -p /run/munge && chown munge:munge /run/munge && runuser -u munge -- /usr/sbin/munged' ||
    fail_daemon munge "$logfile" "munged did not start"
  wait_serving munge "$logfile" "$since" munge/munged.pid 10 munge_serves
}

start_slurmdbd() {
  local logfile=$R/var/log/slurm/slurmdbd.log since
  if ! dbd_serves >/dev/null 2>&1; then
    since=$(log_lines "$logfile")
    stop_pidfiles slurmdbd.pid   # one that runs without serving (retrying its database) makes way
    rm -f "$R/run/slurmdbd.pid"
    enter /usr/sbin/slurmdbd || fail_daemon slurmdbd "$logfile" "slurmdbd did not start"
    # slurmdbd retries a database it cannot reach every 5 s forever: that is a failure here, not a wait
    FAILED_LOG='fatal:|The database must be up' wait_serving slurmdbd "$logfile" "$since" slurmdbd.pid 60 dbd_serves
  fi
  # the cluster row comes before slurmctld's first start (else CLUSTER ID MISMATCH)
  dbd_serves | grep -qx "$CLUSTER" || chroot "$R" sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
    fail_daemon slurmdbd "$logfile" "sacctmgr cannot add the cluster $CLUSTER"
}

start_slurmctld() {
  local logfile=$R/var/log/slurm/slurmctld.log since sum
  since=$(log_lines "$logfile")
  sum=$(cd "$R/etc/slurm" && sha256sum slurm.conf gres.conf cgroup.conf bridge/bridge_notify.* | sha256sum | cut -c1-16)
  if ctld_serves; then
    [ "$(cat "$R/run/bridge-slurmconf.sum" 2>/dev/null)" = "$sum" ] || chroot "$R" scontrol reconfigure
  else
    stop_pidfiles slurmctld.pid
    rm -f "$R/run/slurmctld.pid"
    enter /usr/sbin/slurmctld || fail_daemon slurmctld "$logfile" "slurmctld did not start"
  fi
  echo "$sum" > "$R/run/bridge-slurmconf.sum"
  wait_serving slurmctld "$logfile" "$since" slurmctld.pid 30 ctld_serves
}

start_slurmds() {
  local n since=()
  for n in $(node_names); do
    since+=("$(log_lines "$R/var/log/slurm/slurmd-$n.log")")
    alive "slurmd-$n.pid" && continue
    rm -f "$R/run/slurmd-$n.pid"
    enter /usr/sbin/slurmd -N "$n" || fail_daemon "slurmd $n" "$R/var/log/slurm/slurmd-$n.log" "slurmd did not start"
  done
  for n in $(node_names); do
    wait_serving "slurmd $n" "$R/var/log/slurm/slurmd-$n.log" "${since[0]}" "slurmd-$n.pid" 30 slurmd_serves "$n"
    since=("${since[@]:1}")
  done
}

start_slurmrestd() {
  local logfile=$R/var/log/slurm/slurmrestd.log
  restd_serves && return 0
  if alive slurmrestd.pid; then kill "$(pid_of "$R/run/slurmrestd.pid")"; sleep 0.2; fi
  enter bash -c "(SLURM_JWT=daemon setsid /usr/sbin/slurmrestd -a rest_auth/jwt -u slurmrest 127.0.0.1:$REST_PORT \
                   >/var/log/slurm/slurmrestd.log 2>&1 </dev/null & echo \$! >/run/slurmrestd.pid)"
  wait_serving slurmrestd "$logfile" 0 slurmrestd.pid 15 restd_serves
}

start_sshd() {
  local logfile=$R/var/log/sshd-login.log since
  sshd_serves && return 0
  since=$(log_lines "$logfile")
  enter bash -c "mkdir -p /run/sshd && /usr/sbin/sshd -o ListenAddress=127.0.0.1 -p $SSH_PORT \
                 -o PidFile=/run/sshd-login.pid -o PasswordAuthentication=no -E /var/log/sshd-login.log" ||
    fail_daemon sshd "$logfile" "sshd did not start"
  wait_serving sshd "$logfile" "$since" sshd-login.pid 10 sshd_serves
}

start_daemons() {
  stale_slurmds
  start_db
  start_munge
  start_slurmdbd
  start_slurmctld
  start_slurmds
  start_slurmrestd
  start_sshd
}

stop_pidfiles() {  # PIDFILE...: under the root's /run, globs allowed; waits until each process is gone
  local f g p i st
  for f in "$@"; do
    for p in $(for g in "$R"/run/$f; do pid_of "$g"; done); do
      kill "$p" 2>/dev/null || continue
      for i in $(seq 1 150); do
        st=$(awk '/^State/{print $2}' "/proc/$p/status" 2>/dev/null || true)
        if [ -z "$st" ] || [ "$st" = Z ]; then break; fi; sleep 0.1
      done
    done
  done
}

stop_slurm() { stop_pidfiles slurmrestd.pid 'slurmd-*.pid' slurmctld.pid slurmdbd.pid; }

stop_daemons() {  # mysqld/mysqld.pid: the in-root MariaDB of a root built before the host's took over
  stop_pidfiles sshd-login.pid slurmrestd.pid 'slurmd-*.pid' slurmctld.pid slurmdbd.pid bridge-mariadb/mysqld.pid \
    mysqld/mysqld.pid munge/munged.pid
}

reset() {  # cancel every job and return every node to service (jobs of a previous run whose processes are
  # gone can stay COMPLETING forever after the daemons were stopped under them)
  chroot "$R" scancel --full --state=PENDING,RUNNING,SUSPENDED 2>/dev/null || true
  chroot "$R" scancel --full 2>/dev/null || true
  local nodes; nodes=$(chroot "$R" sinfo -h -N -o '%N' | sort -u | paste -sd,)
  chroot "$R" scontrol update nodename="$nodes" state=down reason=bridge-reset 2>/dev/null || true
  chroot "$R" scontrol update nodename="$nodes" state=resume 2>/dev/null || true
  for i in $(seq 1 100); do
    [ -z "$(chroot "$R" squeue -h -t CG,R,PD 2>/dev/null)" ] && break; sleep 0.1
  done
  for i in $(seq 1 300); do
    [ "$(chroot "$R" sinfo -h -N -p debug -o '%N %T' | grep -cE ' (idle|mixed|allocated)$')" = "$NODES" ] && break
    sleep 0.1
  done
}

status() {  # one line per daemon, up only when it serves (not merely runs); exit 1 when any does not;
  # then what drifted from the tested versions
  local ok=0 d name pidfile check n
  for d in munge:munge/munged.pid:munge_serves mariadb:bridge-mariadb/mysqld.pid:db_serves \
           slurmdbd:slurmdbd.pid:dbd_serves slurmctld:slurmctld.pid:ctld_serves sshd:sshd-login.pid:sshd_serves \
           slurmrestd:slurmrestd.pid:restd_serves; do
    IFS=: read -r name pidfile check <<< "$d"
    if $check >/dev/null 2>&1; then echo "up   $name"
    elif alive "$pidfile"; then echo "sick $name (running, but not answering)"; ok=1
    else echo "down $name"; ok=1
    fi
  done
  for n in $(node_names); do
    if slurmd_serves "$n"; then echo "up   slurmd $n"
    elif alive "slurmd-$n.pid"; then echo "sick slurmd $n ($(chroot "$R" sinfo -h -N -n "$n" -o '%T %E' 2>/dev/null))"; ok=1
    else echo "down slurmd $n"; ok=1
    fi
  done
  [ $ok = 0 ] && chroot "$R" sinfo -N -o '%N %T %c %m %G' 2>/dev/null | sed 's/^/     /'
  drift || true
  return $ok
}

install_all() {
  [ "$(id -u)" = 0 ] || { log "the dev cluster must be set up as root"; exit 1; }
  step host-prereqs host_prereqs
  step debootstrap do_debootstrap
  step configure-apt configure_apt
  step mounts mounts_up
  step apt-install-in-root install_pkgs
  step write-configs write_configs
  step fake-gpus fake_gpus
  step nvidia-driver nvidia_driver
  step gateway-ssh-key gateway_ssh_key
  step build-images build_images
}

# sourced (site-target.sh borrows its functions): define them only
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

NGPU=$(nvidia_count)   # asked once: nvidia-smi takes a tenth of a second where there is a driver

case "${1:-}" in
  up)      install_all; step start-daemons start_daemons; status ;;
  install) install_all ;;
  start)   mounts_up; fake_gpus; step start-daemons start_daemons ;;
  stop)    stop_daemons ;;
  down)    stop_daemons; mounts_down ;;
  umount)  mounts_down ;;
  status)  status ;;
  reset)   reset; status ;;
  enter)   shift; enter "$@" ;;
  versions) installed_versions root; installed_versions host; drift >&2 || true ;;
  record-versions) record_versions; cat "$VERSIONS" ;;
  *) echo "usage: $0 up|down|status|reset|install|start|stop|umount|versions|record-versions|enter CMD..." >&2; exit 2 ;;
esac
