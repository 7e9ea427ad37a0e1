#!/usr/bin/env bash
# Test certificates in one step, for trying TLS out (not for production):
#   scripts/make-test-certs.sh DIR DOMAIN [DEVICE_ID...]
# DIR/ca.pem          the CA terminals and agents trust (--cacert, agent --ca)
# DIR/relay.pem, .key the relay's certificate for DOMAIN, *.DOMAIN, localhost, 127.0.0.1, ::1
#                     (relay serve --tls-cert DIR/relay.pem --tls-key DIR/relay.key)
# DIR/device-ca.pem   the CA device certificates come from (relay serve --device-ca)
# DIR/ID.pem, ID.key  one certificate per device, naming its ID (agent --tls-cert/--tls-key)
# Keys are EC P-256, mode 600; certificates last 90 days.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR DOMAIN [DEVICE_ID...]" >&2
  exit 64
fi
dir=$1 domain=$2
shift 2
mkdir -p "$dir"
cd "$dir"
umask 077
days=90
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # name file-stem
  key "$2.key"
  openssl req -x509 -new -key "$2.key" -out "$2.pem" -days $days -subj "/CN=$1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
issue() { # ca-stem stem cn san
  key "$2.key"
  openssl req -new -key "$2.key" -subj "/CN=$3" -out "$2.csr"
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$4" > "$2.ext"
  openssl x509 -req -in "$2.csr" -CA "$1.pem" -CAkey "$1.key" -CAcreateserial -days $days \
    -extfile "$2.ext" -out "$2.pem" 2>/dev/null
  rm -f "$2.csr" "$2.ext"
}
ca "relay test CA" ca
issue ca relay "$domain" "DNS:$domain,DNS:*.$domain,DNS:localhost,IP:127.0.0.1,IP:::1"
ca "relay test device CA" device-ca
for id in "$@"; do
  issue device-ca "$id" "$id" "DNS:$id"
done
chmod 644 ./*.pem
made="ca.pem relay.pem relay.key device-ca.pem"
for id in "$@"; do made="$made $id.pem $id.key"; done
echo "made in $dir: $made"
