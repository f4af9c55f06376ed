"""User-mode networking of a box (docs/net.md): the addressing plan QEMU and
the agent share (plan), the egress policy the box's shim enforces (policy),
and the log of what it refused (netlog)."""
