"""The root daemon's side of the outbound path: the VIF, its routes and its nftables rules.

Locally originated traffic to the cluster's subnets is routed to the VIF and turned, by the
kernel, into connections on the root daemon's own sockets: TCP through an nftables ``redirect``
(the original destination is read back with ``SO_ORIGINAL_DST``), UDP through ``tproxy``.
:mod:`telepresence.vif._nft` owns the one nftables table that does this.
"""
