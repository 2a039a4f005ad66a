# Sourced by up.sh: a CA and the certificates of every component, made with openssl.
# Everything lives under $PKI; existing files are kept, so a restart reuses them.

cert() { # name subject [sans] [client|server|both]
  local name=$1 subject=$2 sans=${3:-} usage=${4:-client}
  [[ -f "$PKI/$name.crt" ]] && return
  local eku="clientAuth"
  [[ $usage == server ]] && eku="serverAuth"
  [[ $usage == both ]] && eku="serverAuth,clientAuth"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}

make_certs() {
  mkdir -p "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=sluice-e2e-ca" -days 3650 \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  local api_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  api_sans+=",DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
  api_sans+=",IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP"
  cert apiserver "/CN=kube-apiserver" "$api_sans" server
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert admin "/O=system:masters/CN=sluice-e2e-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kube-proxy "/CN=system:kube-proxy"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "DNS:$NODE_NAME,IP:$NODE_IP" both
  cert etcd "/CN=etcd" "DNS:localhost,IP:127.0.0.1" both
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
}

kubeconfig() { # name user-cert
  local name=$1 user=$2
  cat >"$STATE/$name.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: sluice-e2e
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://$NODE_IP:6443
users:
- name: $user
  user:
    client-certificate: $PKI/$user.crt
    client-key: $PKI/$user.key
contexts:
- name: sluice-e2e
  context: {cluster: sluice-e2e, user: $user}
current-context: sluice-e2e
KC
}
