#!/usr/bin/env bash
# Makes the test CA and the certificates the secured servers and the TLS tests use, with
# the openssl CLI only (no network). Idempotent: what exists is kept, what is missing is
# made; a new CA re-issues everything. Called by up.sh; also runs alone.
#
# Usage: tests/services/tls.sh [DIR]     (default: $VISMIG_SERVICES_DIR/tls)
# Files (all PEM; keys are unencrypted PKCS#8):
#   ca.crt ca.key                  the test CA every server and client trusts
#   server.crt server.key          for 127.0.0.1 and localhost (SANs), signed by ca
#   client.crt client.key          CN=$TLS_CLIENT_CN, clientAuth, signed by ca
#   expired.crt expired.key        for 127.0.0.1 and localhost, expired (2020), signed by ca
#   wronghost.crt wronghost.key    for wrong.vismig.test / 10.255.255.1 only, signed by ca
#   other-ca.crt other-ca.key      a second CA nobody trusts
#   other-server.crt other-server.key  for 127.0.0.1 and localhost, signed by other-ca
# The keys are a throwaway test CA's on the loopback address: world-readable (0644) so that
# the postgres and mysql users, the JVMs and the tests can all read them; a server that
# insists on a private key file (PostgreSQL) gets its own copy from its svc script.
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir=${1:-$TLS_DIR}
days=3650
mkdir -p "$dir"
chmod 755 "$dir"
log="$LOG_DIR/tls.log"
mkdir -p "$LOG_DIR"

ossl() { openssl "$@" >>"$log" 2>&1 || fail tls "openssl $1 failed in $dir" "$log"; }

new_key() { ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$1.key"; }

# A self-signed CA certificate.
make_ca() {
  local name=$1 cn=$2
  new_key "$name"
  ossl req -x509 -new -key "$dir/$name.key" -subj "/O=vismig tests/CN=$cn" -days "$days" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/$name.crt"
}

# issue NAME CA CN EXT [STARTDATE ENDDATE]: a leaf certificate signed by CA with the
# extensions EXT (an openssl config section body). `openssl ca` because only it sets an
# arbitrary validity window (the expired certificate); its database is a scratch dir.
issue() {
  local name=$1 ca=$2 cn=$3 ext=$4 start=${5:-} end=${6:-} scratch
  scratch=$(mktemp -d)
  touch "$scratch/index.txt"
  cat >"$scratch/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
database = $scratch/index.txt
new_certs_dir = $scratch
serial = $scratch/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
organizationName = optional
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
$ext
EOF
  openssl rand -hex 16 >"$scratch/serial"
  new_key "$name"
  ossl req -new -key "$dir/$name.key" -subj "/O=vismig tests/CN=$cn" -out "$scratch/$name.csr"
  local validity=(-days "$days")
  [ -z "$start" ] || validity=(-startdate "$start" -enddate "$end")
  ossl ca -batch -notext -config "$scratch/ca.cnf" -extensions leaf -cert "$dir/$ca.crt" -keyfile "$dir/$ca.key" \
    "${validity[@]}" -in "$scratch/$name.csr" -out "$dir/$name.crt"
  rm -rf "$scratch"
}

SERVER_EXT="keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost"

have() { [ -s "$dir/$1.crt" ] && [ -s "$dir/$1.key" ]; }

# A CA made now invalidates everything issued by the old one.
if ! have ca; then
  rm -f "$dir"/*.crt "$dir"/*.key
  make_ca ca "vismig test CA"
fi
if ! have other-ca; then
  rm -f "$dir"/other-server.*
  make_ca other-ca "vismig unknown CA"
fi
have server || issue server ca localhost "$SERVER_EXT"
have client || issue client ca "$TLS_CLIENT_CN" "keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth"
have expired || issue expired ca localhost "$SERVER_EXT" 20200101000000Z 20200201000000Z
have wronghost || issue wronghost ca wrong.vismig.test "keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.vismig.test,IP:10.255.255.1"
have other-server || issue other-server other-ca localhost "$SERVER_EXT"

chmod 644 "$dir"/*.crt "$dir"/*.key
