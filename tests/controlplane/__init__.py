"""Test control plane for jdr: real kube-apiserver, kube-controller-manager, kube-scheduler and etcd,
with simulated nodes (node agent) and CSI-like storage (storage agent). See tests/README.md."""
