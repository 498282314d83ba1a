# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# Kubernetes control plane for the flip and manifest tests: Debian's etcd (etcd-server)
# and kube-apiserver + kubectl built from k8s.io/kubernetes at KUBE_VERSION
# (build-kube.sh), on 127.0.0.1 only. TLS with the test CA (tls.sh): the API server
# serves server.crt; the admin authenticates with a static bearer token in the group
# system:masters; authorization is RBAC only (what the shipped Role grants is all a
# service account gets); service-account tokens are signed with a key made here.
# No kubelet, scheduler or controller manager: pods are not run. On loopback, so no
# endpoint reconciler (it refuses a 127.0.0.1 advertise address): no `kubernetes` Endpoints.
# Sourced by up.sh and down.sh after lib.sh.

KUBE_DIR="$VISMIG_SERVICES_DIR/kube"
KUBE_ETCD_DATA="$KUBE_DIR/etcd"
KUBE_ETCD_PIDFILE="$RUN_DIR/kube-etcd.pid"
KUBE_PIDFILE="$RUN_DIR/kube-apiserver.pid"
KUBE_ETCD_LOG="$LOG_DIR/kube-etcd.log"
KUBE_LOG="$LOG_DIR/kube-apiserver.log"
KUBE_KUBECONFIG="$KUBE_DIR/admin.kubeconfig"
KUBE_BIN=$(kube_dir "$KUBE_VERSION")

kube_prepare() {
  [ -x /usr/bin/etcd ] || ensure_debian_packages etcd-server
  [ -x /usr/bin/etcd ] || fail kube "/usr/bin/etcd not found after installing etcd-server"
  mkdir -p "$KUBE_DIR" "$KUBE_ETCD_DATA"
  chmod 700 "$KUBE_ETCD_DATA"
  # The service-account signing key pair and the admin token: made once, kept.
  if [ ! -s "$KUBE_DIR/sa.key" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KUBE_DIR/sa.key" 2>>"$KUBE_LOG" ||
      fail kube "openssl genpkey failed for the service-account key" "$KUBE_LOG"
    openssl pkey -in "$KUBE_DIR/sa.key" -pubout -out "$KUBE_DIR/sa.pub" 2>>"$KUBE_LOG"
  fi
  if [ ! -s "$KUBE_DIR/tokens.csv" ]; then
    printf '%s,vismig-admin,vismig-admin,"system:masters"\n' "$(openssl rand -hex 24)" >"$KUBE_DIR/tokens.csv"
    chmod 600 "$KUBE_DIR/tokens.csv"
  fi
  local token
  token=$(cut -d, -f1 "$KUBE_DIR/tokens.csv")
  cat >"$KUBE_KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters:
  - name: vismig-test
    cluster:
      server: https://$SERVICES_HOST:$KUBE_PORT
      certificate-authority: $TLS_DIR/ca.crt
users:
  - name: vismig-admin
    user:
      token: $token
contexts:
  - name: vismig-test
    context:
      cluster: vismig-test
      user: vismig-admin
      namespace: default
current-context: vismig-test
KC
  chmod 600 "$KUBE_KUBECONFIG"
}

kube_kubectl() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBE_KUBECONFIG" --request-timeout=10s "$@"; }

kube_running() { live_pid "$KUBE_PIDFILE" >/dev/null; }

kube_healthy() {
  kube_running && kube_kubectl get --raw /readyz >/dev/null 2>&1
}

kube_start() {
  if kube_healthy; then
    set_state kube reused
    return 0
  fi
  if ! live_pid "$KUBE_ETCD_PIDFILE" >/dev/null; then
    port_open "$SERVICES_HOST" "$KUBE_ETCD_PORT" &&
      fail kube "port $KUBE_ETCD_PORT is taken by a process up.sh did not start (etcd)"
    # etcd has no config file here: all flags, VISMIG_SERVICES_DIR on its command line (live_pid).
    setsid /usr/bin/etcd --name vismig --data-dir "$KUBE_ETCD_DATA" \
      --listen-client-urls "http://$SERVICES_HOST:$KUBE_ETCD_PORT" \
      --advertise-client-urls "http://$SERVICES_HOST:$KUBE_ETCD_PORT" \
      --listen-peer-urls "http://$SERVICES_HOST:$KUBE_ETCD_PEER_PORT" \
      --initial-advertise-peer-urls "http://$SERVICES_HOST:$KUBE_ETCD_PEER_PORT" \
      --initial-cluster "vismig=http://$SERVICES_HOST:$KUBE_ETCD_PEER_PORT" \
      --quota-backend-bytes 1073741824 \
      </dev/null >>"$KUBE_ETCD_LOG" 2>&1 &
    echo $! >"$KUBE_ETCD_PIDFILE"
  fi
  # up.sh started the build in the background; this waits for it (same lock) or builds.
  "$SERVICES_HOME/build-kube.sh" "$KUBE_VERSION" >/dev/null || exit 1
  if kube_running; then
    fail kube "a kube-apiserver from an earlier run is alive but not ready on $SERVICES_HOST:$KUBE_PORT" "$KUBE_LOG"
  fi
  port_open "$SERVICES_HOST" "$KUBE_PORT" &&
    fail kube "port $KUBE_PORT is taken by a process up.sh did not start (kube-apiserver)"
  wait_for 30 port_open "$SERVICES_HOST" "$KUBE_ETCD_PORT" || fail kube "etcd did not listen on $SERVICES_HOST:$KUBE_ETCD_PORT within 30s" "$KUBE_ETCD_LOG"
  setsid "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://$SERVICES_HOST:$KUBE_ETCD_PORT" \
    --bind-address "$SERVICES_HOST" --advertise-address "$SERVICES_HOST" --secure-port "$KUBE_PORT" \
    --cert-dir "$KUBE_DIR/certs" \
    --tls-cert-file "$TLS_DIR/server.crt" --tls-private-key-file "$TLS_DIR/server.key" \
    --client-ca-file "$TLS_DIR/ca.crt" \
    --token-auth-file "$KUBE_DIR/tokens.csv" \
    --authorization-mode RBAC \
    --anonymous-auth=false \
    --service-account-issuer "https://kubernetes.default.svc" \
    --service-account-key-file "$KUBE_DIR/sa.pub" \
    --service-account-signing-key-file "$KUBE_DIR/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none \
    --enable-priority-and-fairness=false \
    </dev/null >>"$KUBE_LOG" 2>&1 &
  echo $! >"$KUBE_PIDFILE"
  set_state kube started
}

kube_wait() {
  wait_for 120 kube_healthy || fail kube "kube-apiserver not ready on $SERVICES_HOST:$KUBE_PORT within 120s" "$KUBE_LOG"
}

# Nothing to apply: the tests apply what they need (config/k8s) in their own namespaces.
kube_schema() { :; }

kube_version() { echo "kube-apiserver $KUBE_VERSION, etcd $(/usr/bin/etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}')"; }

kube_stop() {
  stop_pidfile kube-apiserver "$KUBE_PIDFILE" 20
  stop_pidfile kube-etcd "$KUBE_ETCD_PIDFILE" 20
}

kube_rss_pid() { live_pid "$KUBE_PIDFILE"; }
kube_address() { echo "$SERVICES_HOST:$KUBE_PORT"; }
