#!/usr/bin/env bash
# Prints keepalived.conf for one relay node of a site (templates keepalived.conf.in and
# instance.conf.in beside this script; README.md here explains every line).
#   gen-keepalived.sh NODE > /etc/keepalived/keepalived.conf
# By default node k is master of VIP-k (priority 150) and backup of VIP-(k-1) (priority 100;
# node 1 backs up the last VIP). Settings from the environment (defaults: the 3-node example
# of README.md, "Running a cluster"):
#   VIPS        public device addresses, in order        "198.51.100.11 198.51.100.12 198.51.100.13"
#   MVIPS       private mesh addresses, same order       "10.0.1.11 10.0.1.12 10.0.1.13"
#   MASTERS     the master node of each VIP              "1 2 3"  (VIP-k: node k)
#   BACKUPS     the backup node of each VIP              "2 3 1"  (VIP-k: node k+1)
#   PUB_IF      interface of the public addresses        eth0
#   PRIV_IF     private interface (VRRP adverts, mesh)   eth1
#   READYZ      the relay's readiness URL                http://127.0.0.1:8080/readyz
#   VRID_BASE   virtual_router_id of VIP-k = base + k    10
#   ADVERT      advert_int in seconds                    0.2
#   RELEASE_DIR where the release-VIPk files live        /etc/keepalived
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "gen-keepalived.sh: $*" >&2; exit 2; }
node=${1:?usage: gen-keepalived.sh NODE}
read -r -a vips <<< "${VIPS:-198.51.100.11 198.51.100.12 198.51.100.13}"
read -r -a mvips <<< "${MVIPS:-10.0.1.11 10.0.1.12 10.0.1.13}"
count=${#vips[@]}
defm=""; defb=""
for ((k = 1; k <= count; k++)); do defm+="$k "; defb+="$((k % count + 1)) "; done
read -r -a masters <<< "${MASTERS:-$defm}"
read -r -a backups <<< "${BACKUPS:-$defb}"
pub=${PUB_IF:-eth0}; priv=${PRIV_IF:-eth1}
readyz=${READYZ:-http://127.0.0.1:8080/readyz}
base=${VRID_BASE:-10}; advert=${ADVERT:-0.2}; release=${RELEASE_DIR:-/etc/keepalived}
[ "$count" -ge 2 ] || die "a site needs at least 2 VIPs"
[ "${#mvips[@]}" = "$count" ] || die "VIPS and MVIPS differ in length"
[ "${#masters[@]}" = "$count" ] && [ "${#backups[@]}" = "$count" ] || die "MASTERS and BACKUPS need one node per VIP"
case $node in ''|*[!0-9]*|0) die "NODE must be a node number (1..255)";; esac
[ $((base + count)) -le 255 ] || die "VRID_BASE + the number of VIPs must be at most 255"

instances=""
for ((k = 1; k <= count; k++)); do
  m=${masters[k-1]}; b=${backups[k-1]}
  [ "$m" != "$b" ] || die "VIP$k: master and backup are the same node ($m)"
  if [ "$m" = "$node" ]; then prio=150; elif [ "$b" = "$node" ]; then prio=100; else continue; fi
  inst=$(sed -e "s|@K@|$k|g" -e "s|@VRID@|$((base + k))|g" -e "s|@PRIO@|$prio|g" \
             -e "s|@ADVERT@|$advert|g" -e "s|@VIP@|${vips[k-1]}|g" -e "s|@MVIP@|${mvips[k-1]}|g" \
             -e "s|@PUB_IF@|$pub|g" -e "s|@PRIV_IF@|$priv|g" -e "s|@RELEASE_DIR@|$release|g" \
             "$here/instance.conf.in")
  instances+=$'\n'"$inst"
done
[ -n "$instances" ] || die "node $node is neither master nor backup of any VIP"
# the instances go where @INSTANCES@ stands (awk: they span several lines)
awk -v inst="$instances" -v node="$node" -v count="$count" -v readyz="$readyz" '
  { gsub(/@NODE@/, node); gsub(/@COUNT@/, count); gsub(/@READYZ@/, readyz) }
  /^@INSTANCES@$/ { print substr(inst, 2); next }
  { print }' "$here/keepalived.conf.in"
