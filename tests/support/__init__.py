"""ggnet_testing: what the tests, the benches and the lab share to drive ggnet.

Installed by the editable install (pyproject's package-dir maps it to tests/support),
so every consumer imports it by name:

- playbook: one module run through ansible-playbook, on localhost or a lab host
- daemons: daemons started for a test and stopped by PID (and the `daemons` fixture)
- zfs_pool: a zfs-fuse pool on a sparse file (and the `zfs_daemon`, `pool` fixtures)
- tgt_netns: a private tgtd in a network namespace and initiators for it
- netboot_env: a boot network in a netns (dnsmasq, tgtd, a stand-in API, qemu PCs)
- browser: headless Chromium over DevTools and the checks on its screenshots
- zfs_fakes: a stand-in for the zfs command runner in unit tests
- api_project: a project and inventory in git for the API's job tests, and its settings
- monitoring: the ggnet_monitoring role rendered for localhost, Prometheus's answers
"""
