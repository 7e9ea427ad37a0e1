#!/usr/bin/env bash
# Prints keepalived.conf for one relay node of a site (template: keepalived.conf.in and
# instance.conf.in beside this script).
#   gen-keepalived.sh NODE > /etc/keepalived/keepalived.conf
# Node k (1..COUNT) is master of VIP-k (priority 150) and backup of VIP-(k-1) (priority 100;
# node 1 backs up the last VIP). Settings from the environment (defaults: the 3-node example):
#   VIPS      public device addresses, in order       "198.51.100.11 198.51.100.12 198.51.100.13"
#   MVIPS     private mesh addresses, same order      "10.0.1.11 10.0.1.12 10.0.1.13"
#   PUB_IF    interface of the public addresses       eth0
#   PRIV_IF   private interface (VRRP adverts, mesh)  eth1
#   READYZ    the relay's readiness URL               http://127.0.0.1:8080/readyz
#   VRID_BASE virtual_router_id of VIP-k = base + k   10
#   ADVERT    advert_int in seconds                   0.2
#   RELEASE_DIR  where the release-VIPk files live       /etc/keepalived
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
node=${1:?usage: gen-keepalived.sh NODE}
read -r -a vips <<< "${VIPS:-198.51.100.11 198.51.100.12 198.51.100.13}"
read -r -a mvips <<< "${MVIPS:-10.0.1.11 10.0.1.12 10.0.1.13}"
count=${#vips[@]}
pub=${PUB_IF:-eth0}; priv=${PRIV_IF:-eth1}
readyz=${READYZ:-http://127.0.0.1:8080/readyz}
base=${VRID_BASE:-10}; advert=${ADVERT:-0.2}; release=${RELEASE_DIR:-/etc/keepalived}
[ "${#mvips[@]}" = "$count" ] || { echo "gen-keepalived.sh: VIPS and MVIPS differ in length" >&2; exit 2; }
[ "$count" -ge 2 ] || { echo "gen-keepalived.sh: a site needs at least 2 VIPs" >&2; exit 2; }
case $node in ''|*[!0-9]*) echo "gen-keepalived.sh: NODE must be 1..$count" >&2; exit 2;; esac
{ [ "$node" -ge 1 ] && [ "$node" -le "$count" ]; } || { echo "gen-keepalived.sh: NODE must be 1..$count" >&2; exit 2; }
[ $((base + count)) -le 255 ] || { echo "gen-keepalived.sh: VRID_BASE + count must be at most 255" >&2; exit 2; }

backup=$(( (node + count - 2) % count + 1 ))   # the VIP this node backs up: the previous node's
instances=""
for k in "$node" "$backup"; do
  prio=100; [ "$k" = "$node" ] && prio=150
  inst=$(sed -e "s|@K@|$k|g" -e "s|@VRID@|$((base + k))|g" -e "s|@PRIO@|$prio|g" \
             -e "s|@ADVERT@|$advert|g" -e "s|@VIP@|${vips[k-1]}|g" -e "s|@MVIP@|${mvips[k-1]}|g" \
             -e "s|@PUB_IF@|$pub|g" -e "s|@PRIV_IF@|$priv|g" -e "s|@RELEASE_DIR@|$release|g" \
             "$here/instance.conf.in")
  instances+=$'\n'"$inst"
done
# the instances go where @INSTANCES@ stands (awk: they span several lines)
awk -v inst="$instances" -v node="$node" -v count="$count" -v readyz="$readyz" '
  { gsub(/@NODE@/, node); gsub(/@COUNT@/, count); gsub(/@READYZ@/, readyz) }
  /^@INSTANCES@$/ { print substr(inst, 2); next }
  { print }' "$here/keepalived.conf.in"
