#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster from source-built binaries: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy, with containerd, runc and
# the CNI plugins from Debian, and CoreDNS for Service names. Prints the kubeconfig path.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$here/certs.sh"

[[ $(id -u) == 0 ]] || die "must run as root (containers, networking)"
for tool in containerd runc ctr umoci openssl iptables conntrack; do
  command -v "$tool" >/dev/null || die "$tool is missing: run e2e/cluster/install-deps.sh"
done
bash "$here/build.sh"
K=("$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH")

mkdir -p "$STATE" "$RUN" "$LOGS" "$PIDS"
log "network: node address $NODE_IP on $NODE_IF"
ip addr show dev "$NODE_IF" | grep " $NODE_IP/32" >/dev/null || ip addr add "$NODE_IP/32" dev "$NODE_IF"
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 || true

log "certificates"
make_certs
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kube-proxy kube-proxy
kubeconfig kubelet kubelet

log "containerd"
mkdir -p "$STATE/cni/net.d"
cat >"$STATE/cni/net.d/10-sluice.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "sluice-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "sluicebr0", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
CNI
cat >"$STATE/containerd.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      BinaryName = "$here/runc-wrapper.sh"
TOML
start containerd containerd --config "$STATE/containerd.toml"
wait_for "containerd" 60 ctr --address "$CONTAINERD_SOCK" version

log "images"
bash "$here/images.sh" system

log "etcd"
start etcd "$ETCD_BIN/etcd" --name sluice-e2e --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster sluice-e2e=http://127.0.0.1:2380 --log-level warn
wait_for "etcd" 60 curl -sf http://127.0.0.1:2379/health

log "kube-apiserver"
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port 6443 \
  --etcd-servers http://127.0.0.1:2379 \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --client-ca-file "$PKI/ca.crt" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --authorization-mode Node,RBAC --allow-privileged=true
wait_for "kube-apiserver" 120 "${K[@]}" get --raw /readyz

log "kube-controller-manager, kube-scheduler"
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
  --use-service-account-credentials --service-cluster-ip-range "$SERVICE_CIDR" \
  --leader-elect=false --bind-address 127.0.0.1
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1

log "kubelet"
cat >"$STATE/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The machines use cgroup v1, which kubelets since 1.35 refuse unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
address: $NODE_IP
failSwapOn: false
resolvConf: $STATE/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
podPidsLimit: -1
YAML
# Pods resolve only cluster names; nothing is forwarded off this machine.
echo "nameserver $DNS_SERVICE_IP" >"$STATE/resolv.conf"
start kubelet "$K8S_BIN/kubelet" --config "$STATE/kubelet.yaml" \
  --kubeconfig "$STATE/kubelet.kubeconfig" --hostname-override "$NODE_NAME" \
  --node-ip "$NODE_IP" --root-dir "$STATE/kubelet"

log "kube-proxy"
cat >"$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
conntrack: {maxPerCore: 0}
YAML
start kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/kube-proxy.yaml"

wait_for "node $NODE_NAME Ready" 180 \
  "${K[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s

log "CoreDNS"
sed -e "s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|g" -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" \
  "$here/coredns.yaml" | "${K[@]}" apply -f - >/dev/null
wait_for "CoreDNS" 180 "${K[@]}" -n kube-system rollout status deployment/coredns --timeout=5s

log "ready: export KUBECONFIG=$KUBECONFIG_PATH"
echo "$KUBECONFIG_PATH"
