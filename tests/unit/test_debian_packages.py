"""ggnet.debian_packages: what the ggnet_packages module installs, from dpkg's answer."""

from __future__ import annotations

import pytest
from ggnet.debian_packages import PackageError, check_names, missing

pytestmark = pytest.mark.unit


def test_only_packages_not_fully_installed_are_missing():
    out = "dnsmasq-base\tii \nipxe\trc \nlogrotate:amd64\tii \n"
    # ipxe removed with its config left ("rc"); tgt unknown to dpkg: no line at all.
    assert missing(["dnsmasq-base", "ipxe", "logrotate", "tgt"], out) == ["ipxe", "tgt"]


def test_everything_installed_is_nothing_missing():
    assert missing(["git"], "git\tii \n") == []


def test_names_are_checked_and_kept_once_in_order():
    assert check_names(["git", "tgt", "git"]) == ["git", "tgt"]
    with pytest.raises(PackageError, match="'-oDebug=1'"):
        check_names(["git", "-oDebug=1"])
