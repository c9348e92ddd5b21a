"""`COPY --chmod` values: octal (`755`) or symbolic (`u+x,g-w`, `u=rwX,go=rX`, `g=u`).

BuildKit's Dockerfile frontend first tries the value as an octal number (at most
07777); anything else goes to tonistiigi/dchapes-mode, a port of BSD `setmode(3)`,
and the resulting operations are applied to each copied entry's *source* mode
(`X` adds execute only to directories and to files that already had an execute bit).
This module follows the same two steps and the same BSD rules, including the ones
that surprise: `+w` without a "who" is masked by the umask, `o+s` is ignored, `=`
clears the setuid/setgid bits of the classes it names.

BSD's setmode reads the process umask; BuildKit's daemon runs with 022. We take the
umask as a parameter (default 022) so that a build never depends on the caller's
umask.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

from engine.errors import ShipyardError

DEFAULT_UMASK = 0o022

S_ISUID = 0o4000
S_ISGID = 0o2000
S_ISTXT = 0o1000
RWXU, RWXG, RWXO = 0o700, 0o070, 0o007
STANDARD_BITS = S_ISUID | S_ISGID | RWXU | RWXG | RWXO
_R = 0o444
_W = 0o222
_X = 0o111

_CLEAR, _SET, _GBITS, _OBITS, _UBITS = 1, 2, 4, 8, 16


class ChmodError(ShipyardError):
    """A `--chmod` value that is neither octal (0..07777) nor a valid symbolic mode."""


@dataclass(frozen=True)
class _Cmd:
    op: str  # '+', '-', 'X', 'u', 'g', 'o'
    bits: int
    cmd2: int = 0


@dataclass(frozen=True)
class ModeSet:
    """Parsed symbolic mode operations; `apply` maps a source mode to the new bits."""

    cmds: tuple[_Cmd, ...]

    def apply(self, st_mode: int) -> int:
        """The permission bits (incl. setuid/setgid/sticky) for an entry whose mode is `st_mode`."""
        old = st_mode & 0o7777
        new = old
        for c in self.cmds:
            if c.op in "ugo":
                if c.op == "u":
                    value = (new & RWXU) >> 6
                elif c.op == "g":
                    value = (new & RWXG) >> 3
                else:
                    value = new & RWXO
                if c.cmd2 & _CLEAR:
                    clr = RWXO if c.cmd2 & _SET else value
                    if c.cmd2 & _UBITS:
                        new &= ~((clr << 6) & c.bits)
                    if c.cmd2 & _GBITS:
                        new &= ~((clr << 3) & c.bits)
                    if c.cmd2 & _OBITS:
                        new &= ~(clr & c.bits)
                if c.cmd2 & _SET:
                    if c.cmd2 & _UBITS:
                        new |= (value << 6) & c.bits
                    if c.cmd2 & _GBITS:
                        new |= (value << 3) & c.bits
                    if c.cmd2 & _OBITS:
                        new |= value & c.bits
            elif c.op == "+":
                new |= c.bits
            elif c.op == "-":
                new &= ~c.bits
            elif c.op == "X" and (old & _X or stat.S_ISDIR(st_mode)):
                new |= c.bits
        return new & 0o7777


@dataclass(frozen=True)
class Chmod:
    """A parsed `--chmod`: exactly one of `mode` (octal) or `mode_set` (symbolic)."""

    text: str
    mode: int | None = None
    mode_set: ModeSet | None = None

    def apply(self, st_mode: int) -> int:
        if self.mode is not None:
            return self.mode
        assert self.mode_set is not None
        return self.mode_set.apply(st_mode)


def _syntax(text: str) -> ChmodError:
    return ChmodError(f"invalid chmod parameter: '{text}': invalid syntax")


def _octal_error(text: str) -> ChmodError:
    return ChmodError(f"invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777")


def parse_chmod(text: str, umask: int = DEFAULT_UMASK) -> Chmod:
    """Parse a `--chmod` value the way BuildKit's Dockerfile frontend does."""
    if text and all(c in "01234567" for c in text):
        value = int(text, 8)
        if value > 0o7777:
            raise _octal_error(text)
        return Chmod(text=text, mode=value)
    if text and text[0] in "0123456789":
        # Looks numeric but is not octal: BuildKit reports the octal error.
        raise _octal_error(text)
    return Chmod(text=text, mode_set=parse_symbolic(text, umask))


def parse_symbolic(text: str, umask: int = DEFAULT_UMASK) -> ModeSet:
    """BSD `setmode(3)` symbolic syntax (as dchapes-mode implements it)."""
    if not text:
        raise _syntax(text)
    mask = ~umask & 0o7777
    cmds: list[_Cmd] = []

    def addcmd(op: str, who: int, oparg: int | str) -> None:
        if op == "=":
            cmds.append(_Cmd("-", who if who else STANDARD_BITS))
            op = "+"
        if op in "+-X":
            assert isinstance(oparg, int)
            cmds.append(_Cmd(op, (who & oparg) if who else (mask & oparg)))
            return
        # op is 'u', 'g' or 'o': copy bits from that class; oparg is the operator.
        cmd2 = 0
        if who:
            if who & 0o400:
                cmd2 |= _UBITS
            if who & 0o040:
                cmd2 |= _GBITS
            if who & 0o004:
                cmd2 |= _OBITS
            bits = 0o7777
        else:
            cmd2 = _UBITS | _GBITS | _OBITS
            bits = mask
        if oparg == "+":
            cmd2 |= _SET
        elif oparg == "-":
            cmd2 |= _CLEAR
        elif oparg == "=":
            cmd2 |= _SET | _CLEAR
        cmds.append(_Cmd(op, bits, cmd2))

    s = text
    pos = 0
    n = len(s)
    equal_done = False
    while True:
        who = 0
        while True:
            if pos >= n:
                raise _syntax(text)
            c = s[pos]
            if c == "a":
                who |= STANDARD_BITS
            elif c == "u":
                who |= S_ISUID | RWXU
            elif c == "g":
                who |= S_ISGID | RWXG
            elif c == "o":
                who |= RWXO
            else:
                break
            pos += 1
        while True:  # getop
            if pos >= n:
                raise _syntax(text)
            op = s[pos]
            pos += 1
            if op == "=":
                equal_done = False
            elif op not in "+-":
                raise _syntax(text)
            who &= ~S_ISTXT
            perm = 0
            perm_x = 0
            while True:
                b = s[pos] if pos < n else ""
                if b == "r":
                    perm |= _R
                elif b == "s":
                    if who == 0 or who & ~RWXO:
                        perm |= S_ISUID | S_ISGID
                elif b == "t":
                    if who == 0 or who & ~RWXO:
                        who |= S_ISTXT
                        perm |= S_ISTXT
                elif b == "w":
                    perm |= _W
                elif b == "X":
                    if op == "+":
                        perm_x = _X
                elif b == "x":
                    perm |= _X
                elif b in ("u", "g", "o"):
                    if perm:
                        addcmd(op, who, perm)
                        perm = 0
                    if op == "=":
                        equal_done = True
                    if perm_x:
                        addcmd("X", who, perm_x)
                        perm_x = 0
                    addcmd(b, who, op)
                else:
                    if perm or (op == "=" and not equal_done):
                        if op == "=":
                            equal_done = True
                        addcmd(op, who, perm)
                        perm = 0
                    if perm_x:
                        addcmd("X", who, perm_x)
                        perm_x = 0
                    break
                pos += 1
            if pos >= n:
                return ModeSet(_compress(cmds))
            if s[pos] != ",":
                continue  # another operator for the same "who" (e.g. u+x-w)
            pos += 1
            break


def _compress(cmds: list[_Cmd]) -> tuple[_Cmd, ...]:
    """Merge runs of '+', '-' and 'X' commands like dchapes-mode (order-preserving)."""
    out: list[_Cmd] = []
    i = 0
    while i < len(cmds):
        c = cmds[i]
        if c.op not in "+-X":
            out.append(c)
            i += 1
            continue
        setbits = clrbits = xbits = 0
        while i < len(cmds) and cmds[i].op in "+-X":
            c = cmds[i]
            if c.op == "-":
                clrbits |= c.bits
                setbits &= ~c.bits
                xbits &= ~c.bits
            elif c.op == "+":
                setbits |= c.bits
                clrbits &= ~c.bits
                xbits &= ~c.bits
            else:
                xbits |= c.bits & ~setbits
            i += 1
        if clrbits:
            out.append(_Cmd("-", clrbits))
        if setbits:
            out.append(_Cmd("+", setbits))
        if xbits:
            out.append(_Cmd("X", xbits))
    return tuple(out)
