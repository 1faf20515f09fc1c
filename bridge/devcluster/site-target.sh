#!/bin/bash
# A fresh Debian system to deploy the gateway onto with ansible/ (tests/e2e/test_site_deploy.py): a trixie
# root that plays a site's login node beside the dev cluster. It gets what a site's login node has before
# bai-bridge comes, nothing more:
#   - Slurm's client commands (the dev cluster's slurm.conf; munge through the cluster's munged socket),
#   - Apptainer (the gateway inspects images), Python 3 with venv, sudo, ACL tools,
#   - the users with the cluster's uids (what SSSD gives a site),
#   - the shared file systems: the dev cluster's /srv/shared and /srv/images, bind-mounted,
#   - an sshd on 127.0.0.1:$BRIDGE_SITE_SSH_PORT that lets the Ansible controller's key in as root.
# The packages are the dev cluster's tested versions where the archive still has them (tested-versions.txt).
# Fresh on every `up`: the installed system ($BRIDGE_SITE_ROOT.base, built once) is the lower layer of an
# overlay whose upper layer starts empty, so nothing a previous deployment wrote survives.
# Usage: site-target.sh up | down | enter CMD...   (as root)
set -euo pipefail

HERE=$(dirname "$(readlink -f "$0")")
SITE=${BRIDGE_SITE_ROOT:-/srv/siteroot}
DEV=${BRIDGE_DEV_ROOT:-/srv/slurmroot}
SITE_SSH_PORT=${BRIDGE_SITE_SSH_PORT:-2223}
# shellcheck source=testbed.sh
source "$HERE/testbed.sh"      # its functions (debootstrap, apt, pinning, mounts, enter) on R=the target
BASE=$SITE.base; STATE=$SITE.state         # the installed system; the overlay's upper layer
R=$BASE
INSTALLED_MARK=$BASE/etc/bridge-site.installed
PKGS="python3 python3-venv sudo acl procps openssh-server slurm-client ca-certificates"
KEY=$SITE/etc/bridge-site/controller_ed25519   # the Ansible controller's key (and known_hosts beside it)
SHARED="srv/shared srv/images run/munge"    # from the dev cluster, at the same paths

log() { printf '[site-target] %s\n' "$*" >&2; }

install_base() {  # debootstrap and apt, once, into the lower layer
  R=$BASE
  step debootstrap do_debootstrap; step configure-apt configure_apt; mounts_up
  step apt-install install_pkgs; mounts_down
}

fresh_overlay() {  # the target from the installed system and an empty upper layer
  R=$SITE
  site_stop; site_unmount
  if mountpoint -q "$SITE"; then umount -l "$SITE"; fi
  rm -rf "$STATE"; mkdir -p "$STATE/upper" "$STATE/work" "$SITE"
  mount -t overlay bridge-site -o "lowerdir=$BASE,upperdir=$STATE/upper,workdir=$STATE/work" "$SITE"
}

site_mounts() {
  mounts_up
  local d
  for d in $SHARED; do
    [ -e "$DEV/$d" ] || { log "the dev cluster has no /$d: run bai-bridge dev-cluster up first"; exit 1; }
    mkdir -p "$R/$d"
    mountpoint -q "$R/$d" || mount --bind "$DEV/$d" "$R/$d"
  done
}

site_unmount() {
  local d
  for d in $SHARED; do if mountpoint -q "$R/$d"; then umount -l "$R/$d"; fi; done
  mounts_down
}

site_config() {  # what a site's login node has: the cluster's slurm.conf, its users, a resolver, its CAs
  mkdir -p "$R/etc/slurm" "$(dirname "$KEY")"
  cp "$DEV/etc/slurm/slurm.conf" "$R/etc/slurm/slurm.conf"
  cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
  # the CAs this host trusts (a site's proxy, where there is one): pip in the target reaches the index as here
  cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
  local u
  for u in $USERS; do
    enter bash -c "id ${u%%:*} >/dev/null 2>&1 || useradd -m -u ${u##*:} -s /bin/bash ${u%%:*}"
  done
}

site_sshd_serves() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SITE_SSH_PORT && head -c 8 <&3" 2>/dev/null | grep -q '^SSH-2.0'
}

site_sshd() {
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C bridge-site-controller -f "$KEY"
  enter bash -c "[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null
                 install -d -m 700 /root/.ssh && install -m 600 /dev/null /root/.ssh/authorized_keys.new &&
                 cat > /root/.ssh/authorized_keys.new && mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys" \
    < "$KEY.pub"
  echo "[127.0.0.1]:$SITE_SSH_PORT $(cut -d' ' -f1,2 "$R/etc/ssh/ssh_host_ed25519_key.pub")" > "$KEY.known_hosts"
  site_sshd_serves && return 0
  enter bash -c "mkdir -p /run/sshd && /usr/sbin/sshd -o ListenAddress=127.0.0.1 -p $SITE_SSH_PORT \
                 -o PidFile=/run/sshd-site.pid -o PasswordAuthentication=no -o PermitRootLogin=prohibit-password \
                 -E /var/log/sshd-site.log" || { log "sshd did not start: $R/var/log/sshd-site.log"; exit 1; }
  local i
  for i in $(seq 50); do
    site_sshd_serves && return 0
    sleep 0.1
  done
  log "sshd does not answer on 127.0.0.1:$SITE_SSH_PORT: $R/var/log/sshd-site.log"; exit 1
}

site_check() {  # the login node reaches the cluster as a user would
  enter runuser -u alice -- squeue -h -o %i >/dev/null ||
    { log "squeue as alice fails in the target: is the dev cluster up?"; exit 1; }
  log "ready: ssh -i $KEY -o UserKnownHostsFile=$KEY.known_hosts -p $SITE_SSH_PORT root@127.0.0.1"
}

site_stop() {  # its sshd (a gateway a test started from its unit is the test's to stop)
  local pid
  pid=$(cat "$R/run/sshd-site.pid" 2>/dev/null || true)
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
}

[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
case "${1:-}" in
  up)   install_base; step overlay fresh_overlay; step mounts site_mounts; step config site_config
        step sshd site_sshd; site_check ;;
  down) R=$SITE; site_stop; site_unmount; if mountpoint -q "$SITE"; then umount -l "$SITE"; fi ;;
  enter) shift; R=$SITE; enter "$@" ;;
  *) echo "usage: $0 up|down|enter CMD..." >&2; exit 2 ;;
esac
