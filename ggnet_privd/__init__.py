"""ggnet-privd: the root half of the API.

The API that faces the PCs' network runs without root (issue 16 item 9).  What needs
root (a boot's writeback reset, the jobs' playbooks, the zfs/iSCSI/LIO reads of the
collector, the inventory write of an approval) runs here, in a separate service that
answers only named operations over a local Unix socket:

    protocol.py   the JSON-lines messages, their size limit, OpError
    ops.py        the named operations and the checks of their arguments against
                  privd's OWN view of the inventory (the API sends names, never paths
                  or commands)
    playbooks.py  a job's ansible-runner run: events redacted here, cancel by job id
    server.py     the socket: peer checked with SO_PEERCRED, bounded lines, idle
                  timeout, capped connections

The API reaches these operations through ggnet_api/privileged.py, in this process (no
`privd_socket` configured: development, unit tests) or over the socket; both ways call
the same Ops.call, so nothing is checked or done twice in two ways.
"""
