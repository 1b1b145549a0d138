"""Kubernetes-shaped resource types, manifest loading and validation.

Owns: the typed objects users write (and netemu writes back), reading YAML
with line numbers, and the checks that turn bad input into diagnostics.
Must not touch: the kernel, the network, or any state outside the files read.
"""
