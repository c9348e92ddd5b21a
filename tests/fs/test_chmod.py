"""`--chmod` parsing: octal like BuildKit's frontend, symbolic like dchapes-mode (BSD setmode)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from engine.fs.chmod import ChmodError, parse_chmod, parse_symbolic

DIR = stat.S_IFDIR
REG = stat.S_IFREG

# dchapes-mode's TestApply table: (old mode, new mode, umask, mode string).
APPLY = [
    (0o777, 0o000, 0, "="),
    (0o777, 0o777, 0, "+"),
    (0o421, 0o421, 0, "+"),
    (0o777, 0o777, 0, "-"),
    (0o421, 0o421, 0, "-"),
    (0o0421, 0o1421, 0, "+t"),
    (0o1421, 0o0421, 0, "-t"),
    (0o000, 0o400, 0, "u+r"),
    (0o000, 0o200, 0, "u+w"),
    (0o000, 0o100, 0, "u+x"),
    (0o000, 0o000, 0, "u+X"),
    (0o001, 0o101, 0, "u+X"),
    (DIR | 0o000, 0o100, 0, "u+X"),
    (0o000, 0o4000, 0, "u+s"),
    (0o000, 0o040, 0, "g+r"),
    (0o000, 0o020, 0, "g+w"),
    (0o000, 0o010, 0, "g+x"),
    (0o000, 0o000, 0, "g+X"),
    (0o100, 0o110, 0, "g+X"),
    (DIR | 0o000, 0o010, 0, "g+X"),
    (0o000, 0o2000, 0, "g+s"),
    (0o000, 0o004, 0, "o+r"),
    (0o000, 0o002, 0, "o+w"),
    (0o000, 0o001, 0, "o+x"),
    (0o000, 0o000, 0, "o+X"),
    (0o100, 0o101, 0, "o+X"),
    (DIR | 0o000, 0o001, 0, "o+X"),
    (0o000, 0o000, 0, "o+s"),
    (0o000, 0o444, 0, "+r"),
    (0o000, 0o222, 0, "+w"),
    (0o000, 0o111, 0, "+x"),
    (0o000, 0o000, 0, "+X"),
    (0o010, 0o111, 0, "+X"),
    (DIR | 0o000, 0o111, 0, "+X"),
    (0o000, 0o6000, 0, "+s"),
    (0o000, 0o440, 0o034, "+r"),
    (0o000, 0o220, 0o052, "+w"),
    (0o000, 0o110, 0o061, "+x"),
    (0o777, 0o333, 0, "-r"),
    (0o777, 0o555, 0, "-w"),
    (0o777, 0o666, 0, "-x"),
    (0o777, 0o777, 0, "-X"),
    (DIR | 0o777, 0o777, 0, "-X"),
    (0o6777, 0o777, 0, "-s"),
    (0o777, 0o337, 0o037, "-r"),
    (0o777, 0o557, 0o057, "-w"),
    (0o777, 0o667, 0o067, "-x"),
    (0o777, 0o377, 0, "u-r"),
    (0o777, 0o577, 0, "u-w"),
    (0o777, 0o677, 0, "u-x"),
    (0o777, 0o777, 0, "u-X"),
    (DIR | 0o777, 0o777, 0, "u-X"),
    (0o4777, 0o777, 0, "u-s"),
    (0o000, 0o600, 0, "u=rw"),
    (0o777, 0o677, 0, "u=rw"),
    (0o777, 0o077, 0, "u="),
    (0o000, 0o666, 0, "=rw"),
    (0o777, 0o666, 0, "=rw"),
    (0o042, 0o442, 0, "u=g"),
    (0o742, 0o442, 0, "u=g"),
    (0o722, 0o022, 0, "u=g-w"),
    (0o742, 0o442, 0, "u=g-w"),
    (0o762, 0o462, 0, "u=g-w"),
    (0o772, 0o572, 0, "u=g-w"),
    (0o021, 0o121, 0, "u+o"),
    (0o021, 0o221, 0, "u+g"),
    (0o021, 0o321, 0, "u+go"),
    (0o011, 0o111, 0o037, "u+uo"),
    (0o111, 0o011, 0o037, "-u"),
    (0o111, 0o011, 0o037, "-Xu"),
    (0o111, 0o011, 0o037, "-uX"),
    (0o000, 0o764, 0, "a=r,ug=rw,u+x"),
    (0o777, 0o764, 0, "a=r,ug=rw,u+x"),
    (0o000, 0o1624, 0, "o+r,g+w,a+t,g-s,u+og"),
    (0o2100, 0o1724, 0, "o+r,g+w,a+t,g-s,u+og"),
    (DIR | 0o6000, 0o5624, 0, "o+r,g+w,a+t,g-s,u+og"),
    (0o777, 0o755, 0, "go-w"),
    (0o666, 0o664, 0o002, "=rw,+X"),
    (0o766, 0o775, 0o002, "=rw,+X"),
    (0o766, 0o765, 0o012, "=rw,+X"),
    (0o000, 0o755, 0, "u=rwx,go=rx"),
    (0o000, 0o755, 0, "u=rwx,go=u-w"),
    (0o777, 0o700, 0, "go="),
    (0o770, 0o755, 0, "go=u-w"),
    (0o670, 0o644, 0, "go=u-w"),
    (0o570, 0o555, 0, "go=u-w"),
    (0o370, 0o311, 0, "go=u-w"),
    # The ones a Dockerfile uses most, with BuildKit's daemon umask (022).
    (REG | 0o644, 0o744, 0o022, "u+x"),
    (REG | 0o664, 0o744, 0o022, "u+x,g-w"),
    (REG | 0o644, 0o755, 0o022, "+x"),
    (REG | 0o444, 0o644, 0o022, "+w"),  # no "who": masked by the umask
    (REG | 0o740, 0o770, 0o022, "g=u"),
    (REG | 0o644, 0o544, 0o022, "u+x-w"),  # several operators for one "who"
]


@pytest.mark.parametrize(("old", "new", "umask", "text"), APPLY)
def test_symbolic_apply(old: int, new: int, umask: int, text: str) -> None:
    assert parse_symbolic(text, umask).apply(old) == new


@pytest.mark.parametrize("text", ["", ",", "q+r", "z", "u", "g", "o", "go", "a,", "u+x,", "u+q", "rwx", "u!x"])
def test_symbolic_syntax_errors(text: str) -> None:
    with pytest.raises(ChmodError, match="invalid chmod parameter"):
        parse_chmod(text)


@pytest.mark.parametrize(
    ("text", "mode"), [("755", 0o755), ("0644", 0o644), ("4755", 0o4755), ("7777", 0o7777), ("0", 0)]
)
def test_octal(text: str, mode: int) -> None:
    parsed = parse_chmod(text)
    assert parsed.mode == mode
    assert parsed.apply(REG | 0o600) == mode
    assert parsed.apply(DIR | 0o700) == mode


@pytest.mark.parametrize("text", ["17777", "9", "0999", "01000000000000000007777", "8x"])
def test_octal_errors_use_buildkit_message(text: str) -> None:
    with pytest.raises(ChmodError, match="it should be octal string and between 0 and 07777"):
        parse_chmod(text)


def test_x_applies_to_directories_and_executables_only() -> None:
    chmod = parse_chmod("a+X")
    assert chmod.apply(REG | 0o644) == 0o644
    assert chmod.apply(REG | 0o744) == 0o755
    assert chmod.apply(DIR | 0o644) == 0o755


BUILDKIT_CASES = ["go-w", "u=rw,g=r,o=r", "a+X", "u+rw,g+r,o-x,o+w"]


@pytest.mark.parametrize("text", BUILDKIT_CASES)
def test_agrees_with_busybox_chmod(tmp_path: Path, text: str) -> None:
    """BuildKit's own integration test compares --chmod with chmod(1) on these inputs."""
    if not os.path.exists("/bin/busybox"):
        pytest.fail("busybox-static is not installed")
    f = tmp_path / "file"
    f.touch()
    os.chmod(f, 0o666)
    d = tmp_path / "dir"
    d.mkdir()
    os.chmod(d, 0o124)
    for path in (f, d):
        before = os.lstat(path).st_mode
        subprocess.run(["/bin/busybox", "chmod", text, str(path)], check=True)
        assert parse_chmod(text).apply(before) == stat.S_IMODE(os.lstat(path).st_mode), (text, path)
