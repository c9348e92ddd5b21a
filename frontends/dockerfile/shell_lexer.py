"""Dockerfile word expansion, behaving like BuildKit's `frontend/dockerfile/shell/lex.go`.

BuildKit does not run a shell to expand `$VAR` in ENV, COPY, WORKDIR, LABEL and friends:
it has its own small lexer with bash-like quoting and a subset of `${…}` forms. Users
depend on its exact quirks (`$1` is a variable, `${#VAR}` is an error, a `\\` before an
ordinary character inside double quotes stays, `${VAR#pat}` patterns cannot cross a
newline because Go's `.` does not match one), so this module follows it character by
character instead of approximating POSIX.

Two deliberate differences, both only reachable with hostile input: an expansion larger
than `max_size` characters, a `${…}` nesting deeper than `MAX_NESTING`, or a pattern match
whose cost would exceed a fixed budget fails with an `ExpansionError` instead of running
for minutes; and `process_words` keeps the text of a word in progress when a `${…}` with
a modifier follows it (BuildKit shares one buffer between nested scans and loses it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engine.errors import DockerfileError

__all__ = [
    "GO_SPACE_CHARS",
    "MAX_NESTING",
    "MAX_WORD_SIZE",
    "ExpansionError",
    "ShellLex",
    "WordResult",
    "go_quote",
    "go_trim_space",
    "is_go_space",
]

MAX_WORD_SIZE = 1 << 20
"""Largest expansion of one word, in characters (1 MiB); more is an error, not a hang."""

MAX_NESTING = 64
"""Deepest `${a:-${b:-…}}` nesting accepted; Python's stack is smaller than Go's."""

_MATCH_BUDGET = 40_000_000
"""Cost units (characters scanned x 30-bit words of NFA state) one pattern match may use."""

GO_SPACE_CHARS = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""The characters Go's `unicode.IsSpace` accepts (Python's `isspace` adds \\x1c-\\x1f)."""

_GO_SPACE_SET = frozenset(GO_SPACE_CHARS)
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_SPACE_RUN = re.compile("[" + re.escape(GO_SPACE_CHARS) + "]+")
_EOF_RUNE = "\ufffd"  # Go's string(rune(-1)), seen in BuildKit's messages at end of input
_Finder = Callable[[str, int], "re.Match[str] | None"]
_FINDERS: dict[str, _Finder] = {}


def _special_finder(chars: str) -> _Finder:
    """A cached `re.search` for the next character that needs attention."""
    finder = _FINDERS.get(chars)
    if finder is None:
        finder = re.compile("[" + re.escape(chars) + "]").search
        _FINDERS[chars] = finder
    return finder


def is_go_space(ch: str) -> bool:
    """Go's `unicode.IsSpace` for one character."""
    return ch in _GO_SPACE_SET


def go_trim_space(s: str) -> str:
    """Go's `strings.TrimSpace`."""
    return s.strip(GO_SPACE_CHARS)


_QUOTE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(s: str) -> str:
    """Go's `strconv.Quote` (`%q`), so messages read like BuildKit's."""
    out = ['"']
    for ch in s:
        esc = _QUOTE_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch == " " or ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


class ExpansionError(DockerfileError):
    """A word that cannot be expanded; the caller may re-raise it with a location."""

    def __init__(self, message: str, filename: str = "Dockerfile", line: int = 0) -> None:
        super().__init__(message, filename, line)

    def at(self, filename: str, line: int) -> ExpansionError:
        """The same error, located in a Dockerfile."""
        return ExpansionError(self.message, filename, line)


class _LexError(Exception):
    """Internal: an error inside one word, wrapped as `failed to process "word": …`."""


@dataclass(frozen=True, slots=True)
class WordResult:
    """One expanded word, its field-split form, and which variables it referred to.

    `unmatched` feeds BuildKit's UndefinedVar lint; `matched` tells which build args a
    step really used.
    """

    result: str
    words: tuple[str, ...]
    matched: frozenset[str]
    unmatched: frozenset[str]


class _Words:
    """Field splitting as BuildKit's `wordsStruct` does it (quoted text never splits)."""

    __slots__ = ("buf", "buflen", "in_word", "words")

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.buflen = 0
        self.in_word = False
        self.words: list[str] = []

    def add_char(self, ch: str) -> None:
        if ch in _GO_SPACE_SET:
            if self.in_word and self.buflen:
                self.words.append("".join(self.buf))
                self.buf = []
                self.buflen = 0
                self.in_word = False
        else:
            self.buf.append(ch)
            self.buflen += 1
            self.in_word = True

    def add_string(self, s: str) -> None:
        if not s:
            return
        pos = 0
        for m in _SPACE_RUN.finditer(s):
            if m.start() > pos:
                self.add_raw_string(s[pos : m.start()])
            self.add_char(" ")
            pos = m.end()
        if pos < len(s):
            self.add_raw_string(s[pos:])

    def add_raw_string(self, s: str) -> None:
        self.buf.append(s)
        self.buflen += len(s)
        self.in_word = True

    def get(self) -> list[str]:
        if self.buflen:
            self.words.append("".join(self.buf))
            self.buf = []
            self.buflen = 0
            self.in_word = False
        return self.words


class ShellLex:
    """Expands Dockerfile words with a given escape character (`\\` or `` ` ``).

    The option flags mirror BuildKit's `Lex` fields and are only needed for special
    callers: heredoc detection (`raw_quotes`, `raw_escapes`, `skip_unset_env`) and
    heredoc bodies (`skip_process_quotes`).
    """

    __slots__ = ("escape", "max_size", "raw_escapes", "raw_quotes", "skip_process_quotes", "skip_unset_env")

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
        max_size: int = MAX_WORD_SIZE,
    ) -> None:
        if len(escape) != 1:
            raise ValueError("escape must be one character")
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env
        self.max_size = max_size

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """`word` with variables expanded and quotes removed (BuildKit's ProcessWord)."""
        if not self._needs_work(word):
            return word[1:] if word.startswith("\ufeff") else word
        return _Scan(self, word, env, False).run()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """`word` expanded, then split into fields on unquoted whitespace (ProcessWords)."""
        return list(_Scan(self, word, env, True).run()[1])

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> WordResult:
        """Expansion plus the variable names that were found and not found in `env`."""
        scan = _Scan(self, word, env, True)
        result, words = scan.run()
        return WordResult(result, tuple(words), frozenset(scan.matched), frozenset(scan.unmatched))

    def _needs_work(self, word: str) -> bool:
        if "$" in word or self.escape in word:
            return True
        return not self.skip_process_quotes and ("'" in word or '"' in word)


class _Scan:
    """One expansion of one word (BuildKit's `shellWord`)."""

    __slots__ = (
        "depth",
        "env",
        "esc",
        "i",
        "lex",
        "limit",
        "matched",
        "n",
        "raw_escapes",
        "s",
        "source",
        "special",
        "unmatched",
        "want_words",
    )

    def __init__(self, lex: ShellLex, word: str, env: Mapping[str, str], want_words: bool) -> None:
        self.lex = lex
        self.source = word
        # Go's text/scanner silently drops a byte-order mark at the very start.
        self.s = word[1:] if word.startswith("\ufeff") else word
        self.n = len(self.s)
        self.i = 0
        self.env = env
        self.esc = lex.escape
        self.raw_escapes = lex.raw_escapes
        self.want_words = want_words
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.depth = 0
        chars = "$" + self.esc
        if not lex.skip_process_quotes:
            chars += "'\""
        self.special = chars
        self.limit = lex.max_size + self.n

    def run(self) -> tuple[str, list[str]]:
        try:
            return self.stop_on(None, self.raw_escapes)
        except _LexError as err:
            src = self.source if len(self.source) <= 256 else self.source[:256] + "..."
            raise ExpansionError(f"failed to process {go_quote(src)}: {err}") from None

    # -- scanning -------------------------------------------------------------

    def stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str | None) -> tuple[str, list[str]]:
        s, n = self.s, self.n
        special = self.special if stop is None else self.special + stop
        find_special = _special_finder(special)
        out: list[str] = []
        size = 0
        limit = self.limit
        words = _Words() if self.want_words else None
        while self.i < n:
            ch = s[self.i]
            if ch not in special:
                # A run of ordinary characters: copy it in one piece.
                m = find_special(s, self.i)
                j = m.start() if m is not None else n
                chunk = s[self.i : j]
                self.i = j
                out.append(chunk)
                size += len(chunk)
                if words is not None:
                    words.add_string(chunk)
            elif ch == stop:
                self.i += 1
                return "".join(out), words.get() if words is not None else []
            elif ch == "$":
                tmp = self.dollar()
                out.append(tmp)
                size += len(tmp)
                if words is not None:
                    words.add_string(tmp)
            elif ch == "'" or ch == '"':
                tmp = self.single_quote() if ch == "'" else self.double_quote()
                out.append(tmp)
                size += len(tmp)
                if words is not None:
                    words.add_raw_string(tmp)
            else:  # the escape character
                self.i += 1
                if self.raw_escapes:
                    out.append(ch)
                    size += 1
                    if words is not None:
                        words.add_raw_string(ch)
                if self.i >= n:
                    break
                nxt = s[self.i]
                self.i += 1
                out.append(nxt)
                size += 1
                if words is not None:
                    words.add_raw_string(nxt)
            if size > limit:
                raise ExpansionError(f"variable expansion of a word exceeds {self.lex.max_size} characters")
        if stop is not None:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.get() if words is not None else []

    def single_quote(self) -> str:
        s, n = self.s, self.n
        start = self.i + 1
        end = s.find("'", start)
        if end < 0:
            self.i = n
            raise _LexError("unexpected end of statement while looking for matching single-quote")
        self.i = end + 1
        if self.lex.raw_quotes:
            return s[start - 1 : end + 1]
        return s[start:end]

    def double_quote(self) -> str:
        s, n, esc = self.s, self.n, self.esc
        raw_quotes = self.lex.raw_quotes
        out: list[str] = ['"'] if raw_quotes else []
        size = 0
        limit = self.limit
        self.i += 1
        while True:
            if self.i >= n:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            ch = s[self.i]
            if ch == '"':
                self.i += 1
                if raw_quotes:
                    out.append('"')
                return "".join(out)
            if ch == "$":
                value = self.dollar()
                out.append(value)
                size += len(value)
                if size > limit:
                    raise ExpansionError(f"variable expansion of a word exceeds {self.lex.max_size} characters")
                continue
            self.i += 1
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                if self.i >= n:
                    continue  # the loop then reports the missing quote
                nxt = s[self.i]
                if nxt == '"' or nxt == "$" or nxt == esc:
                    ch = nxt
                    self.i += 1
            out.append(ch)
            size += 1

    def _next(self) -> str | None:
        if self.i < self.n:
            ch = self.s[self.i]
            self.i += 1
            return ch
        return None

    def dollar(self) -> str:
        s, n = self.s, self.n
        self.i += 1  # the '$'
        if self.i >= n or s[self.i] != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "$" + name
            return value
        self.i += 1  # the '{'
        if self.i >= n:
            raise _LexError("syntax error: missing '}'")
        if s[self.i] in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self._next()
        chs = ch if ch is not None else _EOF_RUNE
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self.replace(name)
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self._next()
            chs += ch if ch is not None else _EOF_RUNE
        elif ch not in ("+", "-", "?", "#", "%"):
            raise _LexError(f"unsupported modifier ({chs}) in substitution")
        raw = ch == "#" or ch == "%"
        if null_is_unset and raw:
            raise _LexError(f"unsupported modifier ({chs}) in substitution")
        word = self.nested("}", raw, "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + chs + word + "}"
        if ch == "-":
            if not found or (null_is_unset and value == ""):
                return word
            return value
        if ch == "+":
            if not found or (null_is_unset and value == ""):
                return ""
            return word
        if ch == "?":
            if not found:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch == "%" or ch == "#":
            greedy = False
            if word and word[0] == ch:
                greedy = True
                word = word[1:]
            budget = _Budget()
            if ch == "%":
                return _trim_suffix(word, value, greedy, budget)
            return _trim_prefix(word, value, greedy, budget)
        raise _LexError(f"unsupported modifier ({chs}) in substitution")

    def nested(self, stop: str, raw_escapes: bool, eof_message: str) -> str:
        """A `${…}` operand up to `stop`, with BuildKit's message when input ends first."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpansionError(f"variable substitutions nested deeper than {MAX_NESTING} levels")
        try:
            return self.stop_on(stop, raw_escapes)[0]
        except _LexError:
            if self.i >= self.n:
                raise _LexError(eof_message) from None
            raise
        finally:
            self.depth -= 1

    def replace(self, name: str) -> str:
        replace_all = self.i < self.n and self.s[self.i] == "/"
        if replace_all:
            self.i += 1
        pattern = self.nested("/", True, "syntax error: missing '/' in ${}")
        replacement = self.nested("}", True, "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        glob = _Glob.compile(pattern, f"invalid pattern ({pattern}) in substitution")
        return glob.replace(value, replacement, replace_all, self.limit, _Budget())

    def name(self) -> str:
        s, n, i = self.s, self.n, self.i
        if i >= n:
            return ""
        ch = s[i]
        if ch.isdecimal():
            j = i + 1
            while j < n and s[j].isdecimal():
                j += 1
            self.i = j
            return s[i:j]
        if ch in _SPECIAL_PARAMS:
            self.i = i + 1
            return ch
        j = i
        while j < n:
            c = s[j]
            if not (c.isalpha() or c.isdecimal() or c == "_"):
                break
            j += 1
        self.i = j
        return s[i:j]

    def get_env(self, name: str) -> tuple[str, bool]:
        value = self.env.get(name)
        if value is None:
            self.unmatched.add(name)
            return "", False
        self.matched.add(name)
        return value, True


# -- shell patterns (${VAR#p}, ${VAR%p}, ${VAR/p/r}) ------------------------------
#
# BuildKit turns the pattern into a Go regular expression (`*` → `.*` or `.*?`, `?` → `.`)
# and runs it with RE2. Python's backtracking `re` would be exponential on hostile
# patterns, so the pattern runs here as a bit-parallel NFA, which is linear in the text.
# With one greediness for every star, Go's leftmost-first match ends where the longest
# (greedy) or shortest (lazy) match ends, so only the set of reachable ends matters.

_STAR = 0
_ANY = 1
_Token = str | int  # a literal character, or _STAR / _ANY


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = _MATCH_BUDGET

    def spend(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise ExpansionError("pattern substitution is too expensive to evaluate")


class _Glob:
    __slots__ = ("acc", "any_mask", "cost", "init", "lit_masks", "literal", "loop", "star", "step_cache", "tokens")

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        m = len(tokens)
        literal: list[str] | None = []
        lit_masks: dict[str, int] = {}
        any_mask = loop = star = 0
        for k, tok in enumerate(tokens):
            bit = 1 << k
            if isinstance(tok, str):
                lit_masks[tok] = lit_masks.get(tok, 0) | bit
                if literal is not None:
                    literal.append(tok)
                continue
            literal = None
            if tok == _STAR:
                loop |= bit
                star |= bit
            else:
                any_mask |= bit
        self.literal = None if literal is None else "".join(literal)
        self.lit_masks = lit_masks
        self.any_mask = any_mask
        self.loop = loop
        self.star = star
        self.acc = 1 << m
        self.init = self._closure(1)
        self.step_cache: dict[str, int] = {}
        self.cost = m // 30 + 1

    @classmethod
    def compile(cls, pattern: str, context: str) -> _Glob:
        """Tokenize like BuildKit's convertShellPatternToRegex (with its escape errors)."""
        if pattern.startswith("\ufeff"):
            pattern = pattern[1:]
        tokens: list[_Token] = []
        i, n = 0, len(pattern)
        while i < n:
            ch = pattern[i]
            i += 1
            if ch == "*":
                if not tokens or tokens[-1] != _STAR:
                    tokens.append(_STAR)
                continue
            if ch == "?":
                tokens.append(_ANY)
                continue
            if ch == "\\":
                if i < n and pattern[i] in "}/":
                    continue
                nxt = pattern[i] if i < n else _EOF_RUNE
                i += 1
                if nxt not in "*?\\":
                    raise _LexError(f"{context}: invalid escape '\\{nxt}'")
                tokens.append(nxt)
                continue
            tokens.append(ch)
        return cls(tokens)

    def _closure(self, states: int) -> int:
        return states | ((states & self.star) << 1)

    def _step(self, states: int, ch: str) -> int:
        mask = self.step_cache.get(ch)
        if mask is None:
            mask = self.lit_masks.get(ch, 0)
            if ch != "\n":
                mask |= self.any_mask
            self.step_cache[ch] = mask
        nxt = (states & mask) << 1
        if ch != "\n":
            nxt |= states & self.loop
        return nxt | ((nxt & self.star) << 1)

    def match_end(self, text: str, start: int, greedy: bool, budget: _Budget) -> int | None:
        """End of the match anchored at `start`: longest if greedy, else shortest."""
        if self.literal is not None:
            return start + len(self.literal) if text.startswith(self.literal, start) else None
        states = self.init
        acc = self.acc
        best = start if states & acc else None
        if best is not None and not greedy:
            return best
        step = self._step
        spent = 0
        for i in range(start, len(text)):
            states = step(states, text[i])
            spent += 1
            if not states:
                break
            if states & acc:
                best = i + 1
                if not greedy:
                    break
        budget.spend(spent * self.cost)
        return best

    def starts(self, text: str, budget: _Budget) -> list[int]:
        """Every position where some match begins, ascending (one backwards pass)."""
        if self.literal is not None:
            lit = self.literal
            if not lit:
                return list(range(len(text) + 1))
            found = []
            pos = text.find(lit)
            while pos >= 0:
                found.append(pos)
                pos = text.find(lit, pos + 1)
            return found
        rev = _Glob(self.tokens[::-1])
        n = len(text)
        states = 0
        hits = []
        init, acc, step = rev.init, rev.acc, rev._step
        for j in range(n + 1):
            states |= init
            if states & acc:
                hits.append(n - j)
            if j == n:
                break
            states = step(states, text[n - 1 - j])
        budget.spend((n + 1) * rev.cost)
        hits.reverse()
        return hits

    def replace(self, value: str, template: str, replace_all: bool, limit: int, budget: _Budget) -> str:
        """Go's `ReplaceAllString` / first-match replacement, `$0` and all."""
        starts = self.starts(value, budget)
        if not starts:
            return value
        out: list[str] = []
        size = 0
        last_end = 0
        search = 0
        k = 0
        n = len(value)
        while search <= n:
            while k < len(starts) and starts[k] < search:
                k += 1
            if k == len(starts):
                break
            p = starts[k]
            end = self.match_end(value, p, True, budget)
            assert end is not None
            out.append(value[last_end:p])
            size += p - last_end
            if end > last_end or p == 0:
                piece = _expand_template(template, value[p:end])
                out.append(piece)
                size += len(piece)
                if size > limit:
                    raise ExpansionError("variable expansion of a word is too large")
            last_end = end
            if not replace_all:
                break
            search = search + 1 if search + 1 > end else end
        out.append(value[last_end:])
        return "".join(out)


def _trim_prefix(pattern: str, value: str, greedy: bool, budget: _Budget) -> str:
    glob = _Glob.compile(pattern, f"invalid pattern ({pattern}) in substitution")
    end = glob.match_end(value, 0, greedy, budget)
    return value if end is None else value[end:]


def _reverse_pattern(pattern: str) -> str:
    out = [""] * len(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        idx = last - i
        if tok == "\\" and i != last:
            out[idx - 1] = tok
            out[idx] = pattern[i + 1]
            i += 2
        else:
            out[idx] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool, budget: _Budget) -> str:
    # Shortest-suffix search is a prefix search on the reversed text, as in BuildKit.
    reversed_pattern = _reverse_pattern(pattern)
    glob = _Glob.compile(reversed_pattern, f"invalid pattern ({reversed_pattern}) in substitution")
    rev = value[::-1]
    end = glob.match_end(rev, 0, greedy, budget)
    return value if end is None else rev[end:][::-1]


def _template_name(t: str, i: int) -> tuple[str, int] | None:
    brace = i < len(t) and t[i] == "{"
    j = i + 1 if brace else i
    k = j
    while k < len(t) and (t[k].isalpha() or t[k].isdecimal() or t[k] == "_"):
        k += 1
    if k == j:
        return None
    name = t[j:k]
    if brace:
        if k >= len(t) or t[k] != "}":
            return None
        k += 1
    return name, k


def _expand_template(template: str, match: str) -> str:
    """Go's `Regexp.Expand` with a single group: `$0`/`${0}` is the match, `$$` is `$`."""
    if "$" not in template:
        return template
    out: list[str] = []
    i = 0
    while True:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            return "".join(out)
        out.append(template[i:j])
        if template.startswith("$", j + 1):
            out.append("$")
            i = j + 2
            continue
        parsed = _template_name(template, j + 1)
        if parsed is None:
            out.append("$")
            i = j + 1
            continue
        name, i = parsed
        if name == "0":
            out.append(match)
