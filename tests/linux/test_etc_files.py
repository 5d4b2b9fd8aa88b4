"""The container's /etc files decided from the host's: pure, so these run anywhere."""

from __future__ import annotations

from nspawn.backends.linux import etc_files

STUB = "# systemd-resolved's stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.test\n"
UPSTREAM = "# upstream\nnameserver 192.0.2.53\nnameserver 198.51.100.53\nsearch corp.test\n"

# --- pure ----------------------------------------------------------------------------------

def test_loopback_resolvers_give_way_to_the_upstream_ones():
    assert etc_files.resolv_conf(STUB, UPSTREAM, shares_host_network=True) == (UPSTREAM, None)
    plain = "nameserver 192.0.2.1\n"
    assert etc_files.resolv_conf(plain, UPSTREAM, shares_host_network=False) == (plain, None)


def test_without_upstreams_loopback_resolvers_are_dropped_or_kept_with_a_warning():
    mixed = "nameserver 127.0.0.1\nnameserver 192.0.2.1\n"
    text, warning = etc_files.resolv_conf(mixed, None, shares_host_network=False)
    assert text == "nameserver 192.0.2.1\n" and "127.0.0.1" in warning
    assert etc_files.resolv_conf(STUB, None, shares_host_network=True) == (STUB, None)  # its loopback is the host's
    text, warning = etc_files.resolv_conf(STUB, "nameserver 127.0.0.53\n", shares_host_network=False)
    assert text == STUB and "names will not resolve in the container" in warning


def test_the_host_name_is_added_to_hosts_once():
    assert etc_files.hosts_with("", "box") == "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tbox\n"
    assert etc_files.hosts_with("127.0.0.1 localhost", "box") == "127.0.0.1 localhost\n127.0.1.1\tbox\n"
    assert etc_files.hosts_with("10.0.0.1 other box # here\n", "box") is None
    assert etc_files.hosts_with("# 10.0.0.1 box\n", "box").endswith("127.0.1.1\tbox\n")


def test_keep_copies_the_hosts_file_where_its_link_leads_into_what_the_host_view_hides(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/stub-resolv.conf").write_text(STUB)
    (tmp_path / "resolv.conf").symlink_to(tmp_path / "run/stub-resolv.conf")
    (tmp_path / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    monkeypatch.setattr(etc_files, "HOST_RESOLV_CONF", str(tmp_path / "resolv.conf"))
    monkeypatch.setattr(etc_files, "HOST_LOCALTIME", str(tmp_path / "localtime"))
    hidden = lambda path: path.startswith(str(tmp_path / "run") + "/")  # as hostview.hides empties /run
    warnings = []
    assert etc_files.prepare("keep", "keep", False, warnings.append, hidden) == (etc_files.Write("/etc/resolv.conf", STUB.encode()),)
    assert etc_files.prepare("keep", "keep", False, warnings.append) == ()  # a root of its own keeps its own
    (tmp_path / "resolv.conf").unlink()
    (tmp_path / "resolv.conf").write_text(STUB)  # a file, not a link: nothing dangles
    assert etc_files.prepare("keep", "keep", False, warnings.append, hidden) == ()
    assert warnings == []
