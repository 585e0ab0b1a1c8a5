"""Verify the converged lab boot server from the outside, over the same SSH path Ansible
uses.  Each role that lands adds what a person would check by hand."""

testinfra_hosts = ["ggnet_servers"]


def test_state_and_config_directories(host):
    assert host.file("/var/lib/ggnet").is_directory
    assert host.file("/var/lib/ggnet").mode == 0o750
    assert host.file("/etc/ggnet").is_directory


def test_lio_modules_load_at_boot_and_are_loaded(host):
    listed = host.file("/etc/modules-load.d/ggnet-lio.conf").content_string.split()
    assert "iscsi_target_mod" in listed
    assert host.file("/sys/kernel/config/target").is_directory
    assert host.run("grep -qw iscsi_target_mod /proc/modules").rc == 0
