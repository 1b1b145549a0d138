"""netemu: a packet-level Kubernetes service networking emulator."""

__version__ = "0.1.0"
