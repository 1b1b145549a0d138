"""Per-node agents: kubelet, cni, proxy, and the built-in test server."""
