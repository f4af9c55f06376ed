"""User-mode networking of a box (docs/net.md): the addressing plan QEMU and
the agent share (plan), the egress policy the box's shim enforces (policy),
and the log of what it refused (netlog).

cacerts.py   The CAs a box trusts besides its image's (--ca-cert, --trust-host-ca)
netlog.py  Reading a box's network log
nft.py     microbox's one nftables table (`table inet microbox`) for `--net tap` boxes...
plan.py    The addressing plan of a networked box
policy.py  The egress policy of a networked box (docs/net.md)
rtnl.py    The little of rtnetlink (and of network namespaces) that `--net tap` needs,...
tap.py     `--net tap` (root)
upstream.py  The host's own HTTP proxies, which a box's egress proxy dials through
"""
