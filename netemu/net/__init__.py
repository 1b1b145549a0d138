"""The pure network plan of a lab: addresses, links and routes, computed from
cluster state. Must not touch the kernel (netemu/kernel applies the plan)."""
