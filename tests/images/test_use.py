"""The image config's defaults under the config's own values, the layers as the overlay shows
them, and the lower layers in the mount options: pure or on files only."""

import os
import stat

import pytest

from nspawn.backends.linux.mounts import overlay_options
from nspawn.images.use import defaults, lookup

IMAGE = {"Env": ["PATH=/usr/bin", "A=image"], "WorkingDir": "/srv", "Entrypoint": ["/entry"], "Cmd": ["serve", "-v"]}


@pytest.mark.parametrize("document, expected", [
    ({}, {"environment": {"PATH": "/usr/bin", "A": "image"}, "working_directory": "/srv",
          "process_executable": "/entry", "process_arguments": ["serve", "-v"]}),
    ({"environment": {"A": "mine"}, "working_directory": "/w"},
     {"environment": {"PATH": "/usr/bin", "A": "mine"}, "working_directory": "/w",
      "process_executable": "/entry", "process_arguments": ["serve", "-v"]}),
    ({"process_arguments": ["check"]},  # arguments alone replace Cmd, as docker run IMAGE ARGS does
     {"environment": {"PATH": "/usr/bin", "A": "image"}, "working_directory": "/srv",
      "process_executable": "/entry", "process_arguments": ["check"]}),
    ({"process_executable": "/bin/sh", "process_arguments": ["-c", "x"]},  # an executable replaces both
     {"environment": {"PATH": "/usr/bin", "A": "image"}, "working_directory": "/srv",
      "process_executable": "/bin/sh", "process_arguments": ["-c", "x"]}),
])
def test_defaults_under_the_documents_values(document, expected):
    assert defaults(document, IMAGE) == expected


def test_the_images_user_unless_the_config_names_one():
    image = {**IMAGE, "User": "app:staff"}
    assert defaults({}, image)["user"] == "app:staff"
    assert defaults({"user": "0"}, image)["user"] == "0"
    assert "user" not in defaults({}, IMAGE)


def test_without_entrypoint_cmd_names_the_executable():
    assert defaults({}, {"Cmd": ["/bin/sh"]})["process_executable"] == "/bin/sh"
    assert "process_executable" not in defaults({}, {})


def test_lower_layers_in_one_directory_are_named_from_inside_it():
    layers = ("/store/l/aaaa", "/store/l/bbbb")
    assert overlay_options(layers, "/s/upper", "/s/work") == "lowerdir=aaaa:bbbb,upperdir=/s/upper,workdir=/s/work"
    mixed = ("/x/diff", "/y/diff")
    assert overlay_options(mixed, "/u", "/w").startswith("lowerdir=/x/diff:/y/diff,")
    assert overlay_options("/root,fs", "/u", "/w").startswith("lowerdir=/root\\,fs,")


@pytest.mark.root  # whiteouts (device nodes) and trusted xattrs need root; in CI a skip fails
@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts (device nodes) and trusted xattrs need root")
def test_lookup_through_layers_as_overlay_shows_them(tmp_path):
    top, low = tmp_path / "top", tmp_path / "low"
    for d in (top, low):
        (d / "etc").mkdir(parents=True)
    (low / "etc" / "gone").write_text("x")
    (low / "etc" / "kept").write_text("x")
    (low / "usr" / "bin").mkdir(parents=True)
    (low / "usr" / "bin" / "sh").write_text("x")
    os.symlink("usr/bin", low / "bin")
    os.mknod(top / "etc" / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    (low / "opaque").mkdir()
    (low / "opaque" / "hidden").write_text("x")
    (top / "opaque").mkdir()
    os.setxattr(top / "opaque", "trusted.overlay.opaque", b"y")
    diffs = (str(top), str(low))
    assert lookup(diffs, "/etc/kept") == str(low / "etc" / "kept")
    assert lookup(diffs, "/etc/gone") is None
    assert lookup(diffs, "/bin/sh") == str(low / "usr" / "bin" / "sh")  # a lower layer's link, followed
    assert lookup(diffs, "/opaque/hidden") is None
    assert lookup(diffs, "/etc/../etc/kept") == str(low / "etc" / "kept")
    assert lookup(diffs, "/etc") == str(top / "etc")


@pytest.mark.parametrize("document, says", [
    ({"image": "Alpine"}, "image: found 'Alpine', whose repository part 'Alpine' must be lowercase"),
    ({"image": "alpine", "parent_layer_directory": "/"}, "image: set with parent_layer_directory; expected one of them"),
    ({"image": "alpine", "backend": "hcs", "parent_layer_directory": "C:\\\\l", "process_executable": "x.exe"},
     "image: set with parent_layer_directory; expected one of them"),
    ({}, 'process_executable: missing; expected the required key "process_executable"'),
])
def test_config_rules_of_image(tmp_path, document, says):
    from nspawn.config.resolve import load_config
    from nspawn.errors import ConfigError

    path = tmp_path / "c.json"
    path.write_text(__import__("json").dumps(document))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert any(says in str(p) for p in e.value.problems), [str(p) for p in e.value.problems]


def test_an_image_config_without_executable_validates(tmp_path):
    from nspawn.config.resolve import load_config

    path = tmp_path / "c.json"
    path.write_text('{"image": "debian:bookworm"}')
    config = load_config(str(path))  # the file checks: the image is not looked for
    assert (config.image, config.process_executable, config.resolved_image) == ("debian:bookworm", None, None)
    path.write_text('{"image": "mcr.microsoft.com/windows/nanoserver:ltsc2022", "backend": "hcs"}')
    assert load_config(str(path)).backend == "hcs"  # the image stands for the parent layer HCS needs
