"""The environment a job expects: LANG, its host name resolving, the host's resolvers (without
the loopback ones it cannot reach) and time zone, and mounts over an image's dangling links."""

from __future__ import annotations

import os
import shutil

import pytest

from nspawn.backends.linux import etc_files
from tests.linux.conftest import needs_root, run, sh
from tests.linux.layers import make_layer

from tests.linux.test_etc_files import STUB, UPSTREAM

pytestmark = needs_root


@pytest.fixture
def host_files(tmp_path, monkeypatch):
    """The host's resolv.conf (systemd-resolved's stub), resolved's upstream file and zone,
    as the launcher will read them: files of the test, never the real /etc."""
    (tmp_path / "host-resolv.conf").write_text(STUB)
    (tmp_path / "upstream.conf").write_text(UPSTREAM)
    (tmp_path / "localtime").symlink_to("/usr/share/zoneinfo/America/Sao_Paulo")
    monkeypatch.setattr(etc_files, "HOST_RESOLV_CONF", str(tmp_path / "host-resolv.conf"))
    monkeypatch.setattr(etc_files, "RESOLVED_UPSTREAM", str(tmp_path / "upstream.conf"))
    monkeypatch.setattr(etc_files, "HOST_LOCALTIME", str(tmp_path / "localtime"))
    return tmp_path


@pytest.fixture
def resolved_image(tmp_path):
    """An image built for systemd-resolved: /etc/resolv.conf is a link to a file it lacks."""
    layer = make_layer(tmp_path / "layer")
    (layer / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    return layer


def test_lang_user_logname_home_and_the_host_name_resolving_inside(clean):
    script = ("import os, socket; name = socket.gethostname(); "
              "print(os.environ['LANG'], os.environ['USER'], os.environ['LOGNAME'], os.environ['HOME']); "
              "print(name, socket.gethostbyname(name))")
    r = run({"process_executable": "/usr/bin/python3", "process_arguments": ["-c", script], "hostname": "box-7"})
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["C.UTF-8 root root /root", "box-7 127.0.1.1"]
    r = run(sh("getent hosts $(hostname)", hostname="box-8", network="host"))
    assert r.code == 0 and r.out.split() == ["127.0.1.1", "box-8"]


def test_copy_host_replaces_an_images_dangling_resolv_conf_with_the_upstreams(host_files, resolved_image, clean):
    r = run(sh("cat /etc/resolv.conf; ls -l /etc/resolv.conf", parent_layer_directory=str(resolved_image), network="host"))
    assert r.code == 0, r.err
    assert r.out.startswith(UPSTREAM) and r.out.splitlines()[-1].startswith("-rw-r--r--")  # a file now, not the link
    assert os.readlink(resolved_image / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"  # the image's own is untouched
    assert r.warnings() == []


def test_keep_none_and_the_default_without_a_network(host_files, resolved_image, clean):
    layer = str(resolved_image)
    keep = run(sh("ls -l /etc/resolv.conf", parent_layer_directory=layer, network="host", resolv_conf="keep"))
    assert keep.code == 0 and "-> ../run/systemd/resolve/stub-resolv.conf" in keep.out
    default = run(sh("ls -l /etc/resolv.conf", parent_layer_directory=layer))  # network none: auto keeps it
    assert default.code == 0 and "-> ../run/systemd/resolve/stub-resolv.conf" in default.out
    none = run(sh("ls /etc; test -e /etc/resolv.conf || test -L /etc/resolv.conf || echo gone",
                  parent_layer_directory=layer, network="host", resolv_conf="none"))
    assert none.code == 0 and none.out.splitlines()[-1] == "gone"


def test_a_loopback_resolver_without_upstreams_is_said(host_files, resolved_image, clean):
    (host_files / "upstream.conf").unlink()
    r = run(sh("cat /etc/resolv.conf", parent_layer_directory=str(resolved_image), resolv_conf="copy-host"))
    assert r.code == 0 and r.out == STUB
    assert any("127.0.0.53" in w and "will not resolve" in w for w in r.warnings())


def test_the_hosts_time_zone_is_linked_where_the_root_has_it_and_copied_where_not(host_files, resolved_image, clean):
    linked = run(sh("readlink /etc/localtime"))
    assert linked.code == 0 and linked.out == "/usr/share/zoneinfo/America/Sao_Paulo\n"
    work = host_files / "work"
    work.mkdir()
    copied = run(sh(f"cat /etc/localtime > {work}/tz", parent_layer_directory=str(resolved_image), process_directory=str(work)))
    assert copied.code == 0, copied.err
    with open("/usr/share/zoneinfo/America/Sao_Paulo", "rb") as f:
        assert (work / "tz").read_bytes() == f.read()
    kept = run(sh("readlink /etc/localtime || echo none", parent_layer_directory=str(resolved_image), timezone="keep"))
    assert kept.out == "none\n"


def test_with_the_host_view_keep_gives_the_hosts_resolv_conf_that_links_into_run(tmp_path, monkeypatch, clean):
    """The host view empties /run, where systemd-resolved's resolv.conf is: the host's link, kept
    as it is, would dangle in the container; it gets the host's file as the host reads it."""
    hidden = f"/run/nspawn-test-resolve-{os.getpid()}"
    os.mkdir(hidden)
    try:
        with open(f"{hidden}/stub-resolv.conf", "w") as f:
            f.write(STUB)
        (tmp_path / "resolv.conf").symlink_to(f"{hidden}/stub-resolv.conf")
        monkeypatch.setattr(etc_files, "HOST_RESOLV_CONF", str(tmp_path / "resolv.conf"))
        r = run(sh(f"cat /etc/resolv.conf; test -e {hidden} || echo hidden", network="host", resolv_conf="keep"))
        assert r.code == 0, r.err
        assert r.out == STUB + "hidden\n"
    finally:
        shutil.rmtree(hidden)


def test_a_file_mapped_over_a_dangling_link_lands_where_the_link_leads(tmp_path, resolved_image, clean):
    mine = tmp_path / "my-resolv.conf"
    mine.write_text("nameserver 203.0.113.1\n")
    r = run(sh("cat /etc/resolv.conf", parent_layer_directory=str(resolved_image), network="host",
               mounts=[{"host_path": str(mine), "container_path": "/etc/resolv.conf", "read_only": True}]))
    assert r.code == 0, r.err
    assert r.out == "nameserver 203.0.113.1\n"


def test_a_mount_on_a_looping_link_is_refused_with_2_and_the_reason(tmp_path, clean):
    layer = make_layer(tmp_path / "layer")
    (layer / "etc/resolv.conf").symlink_to("resolv.conf")
    mine = tmp_path / "my-resolv.conf"
    mine.write_text("nameserver 203.0.113.1\n")
    r = run(sh("true", parent_layer_directory=str(layer),
               mounts=[{"host_path": str(mine), "container_path": "/etc/resolv.conf", "read_only": True}]))
    assert r.code == 2
    assert "/etc/resolv.conf cannot be made in the container" in r.result.error and "symbolic link" in r.result.error
