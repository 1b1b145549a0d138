"""The pure rule compiler: kube-proxy's iptables mode, the rule-set model
(rendering to iptables-restore input and parsing iptables-save output), and
the offline packet simulator.

Owns: turning cluster state into rules and walking packets through rules.
Must not touch: the kernel, processes or files (callers do I/O).
"""
