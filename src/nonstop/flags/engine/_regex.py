"""Translate the Rust `regex` crate's syntax (what Unleash's engine uses for REGEX
constraints) into an equivalent RE2 pattern (google-re2), or say why it cannot be done.

RE2, like Rust's engine, runs in time linear in the input whatever the pattern: a REGEX
constraint such as ``^(a+)+$`` cannot stall flag evaluation in an application's request
thread (Python's backtracking `re` takes seconds on 30 characters of that). The dialects
differ where it matters for a flag decision:

    Rust                         RE2 (what we emit)
    $  (no m flag)               \\z           (Rust `$` never matches before a final newline)
    ^, $ (m flag)                (?m:^), (?m:$)
    .  (no s flag)               [^\\n]
    (?i) in the middle           (?i: ... ) up to the end of the enclosing group
    [[:alpha:]]                  [A-Za-z]    (POSIX classes are ASCII in Rust)
    \\d, \\w (Unicode)            \\p{Nd}, [\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}\\x{200C}\\x{200D}]
    \\s                           the Unicode White_Space set
    \\z, \\x{41}, \\u{41}           \\z, A, A

Rust rejects look-around, back-references and possessive repetition; so do we
(`RegexTranslationError`), and such a constraint never matches, like in the SDK. What Rust
accepts but RE2 cannot express is refused the same way, with a message that says so
(reported at import): ``\\b{start}``/``\\b{end}``/``\\<``/``\\>`` (they need look-around),
multi-line anchors with the CRLF flag ``R``, counted repetition above 1000, and patterns whose
compiled program is larger than RE2's memory budget. One known difference is accepted and
documented: ``\\b`` is an ASCII word boundary in RE2 (Unicode in Rust), so it differs only
next to a non-ASCII letter or digit.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import re2  # type: ignore[import-untyped]

__all__ = ["RegexTranslationError", "RustRegex", "compile_rust_regex"]


class RegexTranslationError(ValueError):
    """The pattern is invalid in Rust's syntax, or uses a part we do not translate."""


_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\x0b\\x0c\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_UNICODE_SPACE = (
    "\\t\\n\\x0b\\x0c\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
    "\\x{202f}\\x{205f}\\x{3000}"
)
_ASCII_WORD = "0-9A-Za-z_"
_UNICODE_WORD = "\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}\\x{200C}\\x{200D}"
_PERL = {
    # letter -> (unicode body, ascii body); upper case letters negate
    "d": ("\\p{Nd}", "0-9"),
    "w": (_UNICODE_WORD, _ASCII_WORD),
    "s": (_UNICODE_SPACE, "\\t\\n\\x0b\\x0c\\r "),
}
_RE2_CANNOT = "RE2 (the linear-time engine flags use) cannot express"
_SCRIPT = re.compile(r"[A-Za-z_]+")
_SIMPLE_ESCAPES = {"a": "\\x07", "f": "\\x0c", "t": "\\t", "n": "\\n", "r": "\\r", "v": "\\x0b"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\[\].]*")
_COUNTED = re.compile(r"\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}", re.ASCII)
_FLAG_LETTERS = set("imsUuxR")
_CATEGORY_NAMES = {
    "letter": "L",
    "cased_letter": "LC",
    "uppercase_letter": "Lu",
    "lowercase_letter": "Ll",
    "titlecase_letter": "Lt",
    "modifier_letter": "Lm",
    "other_letter": "Lo",
    "mark": "M",
    "nonspacing_mark": "Mn",
    "spacing_mark": "Mc",
    "enclosing_mark": "Me",
    "number": "N",
    "decimal_number": "Nd",
    "letter_number": "Nl",
    "other_number": "No",
    "punctuation": "P",
    "connector_punctuation": "Pc",
    "dash_punctuation": "Pd",
    "open_punctuation": "Ps",
    "close_punctuation": "Pe",
    "initial_punctuation": "Pi",
    "final_punctuation": "Pf",
    "other_punctuation": "Po",
    "symbol": "S",
    "math_symbol": "Sm",
    "currency_symbol": "Sc",
    "modifier_symbol": "Sk",
    "other_symbol": "So",
    "separator": "Z",
    "space_separator": "Zs",
    "line_separator": "Zl",
    "paragraph_separator": "Zp",
    "other": "C",
    "control": "Cc",
    "format": "Cf",
    "surrogate": "Cs",
    "private_use": "Co",
    "unassigned": "Cn",
}


@dataclass
class _Flags:
    i: bool = False
    m: bool = False
    s: bool = False
    U: bool = False
    u: bool = True
    x: bool = False
    R: bool = False

    def copy(self) -> _Flags:
        return _Flags(self.i, self.m, self.s, self.U, self.u, self.x, self.R)


class RustRegex:
    """A compiled REGEX constraint: `search` runs in time linear in the text."""

    def __init__(self, pattern: str, translated: str, compiled: object) -> None:
        self.pattern = pattern
        self.translated = translated
        self._search = compiled.search  # type: ignore[attr-defined]

    def search(self, text: str) -> object | None:
        """A match object, or None. Text that is not valid Unicode (a lone surrogate from a
        JSON escape) is searched as its bytes: never an exception in a request thread."""
        found: object | None = self._search(text.encode("utf-8", "surrogatepass"))
        return found


def _options() -> object:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is a Problem, not a line on stderr
    options.max_mem = 8 << 20  # RE2's default budget, explicit: bigger programs are refused
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=4096)
def compile_rust_regex(pattern: str, case_insensitive: bool = False) -> RustRegex:
    """Compile `pattern` with Rust semantics; raise RegexTranslationError when Rust would not,
    or when RE2 cannot express it."""
    translated = _Translator(pattern, _Flags(i=case_insensitive)).translate()
    try:
        compiled = re2.compile(translated, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args else str(exc)
        if isinstance(exc.args[0] if exc.args else None, str):
            detail = exc.args[0]
        raise RegexTranslationError(f"{_RE2_CANNOT} it: {detail}") from None
    return RustRegex(pattern, translated, compiled)


class _Translator:
    def __init__(self, pattern: str, flags: _Flags) -> None:
        self.p = pattern
        self.pos = 0
        self.flags = flags
        self.names: set[str] = set()

    def fail(self, message: str) -> RegexTranslationError:
        return RegexTranslationError(f"{message} at offset {self.pos}")

    def peek(self, n: int = 1) -> str:
        return self.p[self.pos : self.pos + n]

    def translate(self) -> str:
        case_insensitive = self.flags.i
        out = self.sequence(top=True)
        if self.pos < len(self.p):
            raise self.fail("unopened group")
        return f"(?i:{out})" if case_insensitive else out

    def sequence(self, top: bool) -> str:
        """Alternatives up to the end of the enclosing group (which the caller consumes)."""
        out: list[str] = []
        closers = 0  # scoped groups opened by bare (?flags) in this group
        saved = self.flags.copy()
        last_atom = False  # can a repetition operator follow?
        atom_start = 0  # index in `out` where the last repeatable item starts
        while self.pos < len(self.p):
            c = self.p[self.pos]
            if self.flags.x and c in " \t\n\r\x0b\x0c":
                self.pos += 1
                continue
            if self.flags.x and c == "#":
                end = self.p.find("\n", self.pos)
                self.pos = len(self.p) if end < 0 else end + 1
                continue
            if c == ")":
                if top:
                    raise self.fail("unopened group")
                break
            if c == "|":
                self.pos += 1
                out.append(")" * closers + "|")
                if closers:  # Rust: flags set earlier in the group carry into the next branch
                    out.append(self.scope_prefix())
                    closers = 1
                last_atom = False
                continue
            if c in "*+?{":
                if not last_atom:
                    raise self.fail("repetition operator missing expression")
                if atom_start < len(out) - 1:  # Rust allows `a**`: repeat the repetition
                    out[atom_start:] = ["(?:" + "".join(out[atom_start:]) + ")"]
                out.append(self.repetition())
                continue
            if c == "(":
                piece = self.group()
                if piece is None:  # bare flag group: scope to the end of this group
                    out.append(self.scope_prefix())
                    closers += 1
                    last_atom = False
                    continue
                atom_start = len(out)
                out.append(piece)
                last_atom = True
                continue
            atom_start = len(out)
            out.append(self.atom())
            last_atom = True
        out.append(")" * closers)
        self.flags = saved
        return "".join(out)

    def scope_prefix(self) -> str:
        return "(?i:" if self.flags.i else "(?-i:"

    def repetition(self) -> str:
        c = self.p[self.pos]
        if c == "{":
            m = _COUNTED.match(self.p, self.pos)
            if not m:
                raise self.fail("invalid counted repetition")
            low, comma, high = m.group(1), m.group(2), m.group(3)
            if high and int(high) < int(low):
                raise self.fail("invalid counted repetition range")
            op = "{" + low + ("," + high if comma else "") + "}"
            self.pos = m.end()
        else:
            op = c
            self.pos += 1
        lazy = False
        if self.peek() == "?":
            lazy = True
            self.pos += 1
        if self.flags.U:
            lazy = not lazy
        return op + ("?" if lazy else "")

    def group(self) -> str | None:
        start = self.pos
        self.pos += 1
        saved = self.flags.copy()
        if self.peek() != "?":
            inner = self.sequence(top=False)
            return self.close_group(start, "(?:" + inner, saved)
        self.pos += 1
        if self.peek(2) == "P<" or (self.peek() == "<" and self.peek(2) not in ("<=", "<!")):
            self.pos += 2 if self.peek() == "P" else 1
            end = self.p.find(">", self.pos)
            name = self.p[self.pos : end] if end >= 0 else ""
            if end < 0 or not _NAME.fullmatch(name):
                raise self.fail("invalid capture group name")
            if name in self.names:
                raise self.fail("duplicate capture group name")
            self.names.add(name)
            self.pos = end + 1
            inner = self.sequence(top=False)
            return self.close_group(start, "(?:" + inner, saved)
        m = re.compile(r"([A-Za-z-]*)([:)])").match(self.p, self.pos)
        if not m:
            raise self.fail("unsupported group syntax (look-around, atomic or comment group)")
        self.apply_flags(m.group(1))
        self.pos = m.end()
        if m.group(2) == ")":
            return None
        inner = self.sequence(top=False)
        return self.close_group(start, self.scope_prefix() + inner, saved)

    def close_group(self, start: int, body: str, saved: _Flags) -> str:
        if self.peek() != ")":
            self.pos = start
            raise self.fail("unclosed group")
        self.pos += 1
        self.flags = saved
        return body + ")"

    def apply_flags(self, letters: str) -> None:
        value = True
        seen: set[str] = set()
        if not letters or letters == "-" or letters.endswith("-"):
            if letters:
                raise self.fail("flag negation without flags")
            return
        for ch in letters:
            if ch == "-":
                if not value:
                    raise self.fail("repeated flag negation")
                value = False
                continue
            if ch not in _FLAG_LETTERS or ch in seen:
                raise self.fail(f"unsupported or repeated flag {ch!r}")
            seen.add(ch)
            setattr(self.flags, ch, value)

    def atom(self) -> str:
        c = self.p[self.pos]
        self.pos += 1
        if c == ".":
            if self.flags.s:
                return "(?s:.)"
            return "[^\\r\\n]" if self.flags.R else "[^\\n]"
        if c in "^$":
            if not self.flags.m:
                return "\\A" if c == "^" else "\\z"
            if self.flags.R:
                raise self.fail(f"{_RE2_CANNOT} multi-line {c} with the CRLF flag R")
            return f"(?m:{c})"
        if c == "[":
            return self.char_class()
        if c == "\\":
            return self.escape(in_class=False)
        return _literal(c, in_class=False)

    def escape(self, in_class: bool) -> str:
        if self.pos >= len(self.p):
            raise self.fail("incomplete escape")
        c = self.p[self.pos]
        self.pos += 1
        if c in "pP":
            return f"\\{c}{{{self.unicode_class()}}}"
        if c.lower() in _PERL:
            unicode_body, ascii_body = _PERL[c.lower()]
            body = unicode_body if self.flags.u else ascii_body
            return (
                ("[" if c.islower() else "[^") + body + "]" if not in_class else _negatable(body, c)
            )
        if c in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[c]
        if c in "xuU":
            return _literal(self.hex_escape(c), in_class)
        if in_class:
            if c.isalnum():
                raise self.fail(f"unsupported escape \\{c} in a class")
            return "\\" + c
        if c == "A":
            return "\\A"
        if c == "z":
            return "\\z"
        if c == "b" and self.peek() == "{":
            end = self.p.find("}", self.pos)
            kind = self.p[self.pos + 1 : end] if end >= 0 else ""
            if kind not in ("start", "end", "start-half", "end-half"):
                raise self.fail("unsupported word boundary form")
            raise self.fail(f"{_RE2_CANNOT} \\b{{{kind}}} (it needs look-around)")
        if c in "bB":
            return "\\" + c  # RE2's boundary is ASCII (Rust's is Unicode without (?-u))
        if c in "<>":
            raise self.fail(f"{_RE2_CANNOT} \\{c} (it needs look-around)")
        if c.isalnum() or (c.isspace() and c != " "):
            raise self.fail(f"unsupported escape \\{c}")
        return "\\" + c

    def unicode_class(self) -> str:
        """The RE2 name of a ``\\p`` class: a general category or a script."""
        if self.peek() == "{":
            end = self.p.find("}", self.pos)
            name = self.p[self.pos + 1 : end] if end >= 0 else ""
            self.pos = end + 1 if end >= 0 else self.pos
        else:
            name = self.peek()
            self.pos += 1
        key = name.replace(" ", "").replace("-", "_")
        category = _CATEGORY_NAMES.get(
            key.lower(), key if key in _CATEGORY_NAMES.values() else None
        )
        if category in ("LC", "Cn"):
            raise self.fail(f"{_RE2_CANNOT} the Unicode class {name!r}")
        if category is not None:
            return category
        script = key.split("=", 1)[1] if key.lower().startswith(("sc=", "script=")) else key
        if not _SCRIPT.fullmatch(script):
            raise self.fail(f"unsupported Unicode class {name!r}")
        return script  # a script such as Greek; RE2 refuses names it does not know

    def hex_escape(self, kind: str) -> str:
        if self.peek() == "{":
            end = self.p.find("}", self.pos)
            digits = self.p[self.pos + 1 : end] if end >= 0 else ""
            self.pos = end + 1 if end >= 0 else self.pos
        else:
            size = {"x": 2, "u": 4, "U": 8}[kind]
            digits = self.p[self.pos : self.pos + size]
            if len(digits) != size:
                raise self.fail("incomplete hex escape")
            self.pos += size
        if not digits or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise self.fail("invalid hex escape")
        value = int(digits, 16)
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise self.fail("invalid code point")
        return chr(value)

    def char_class(self) -> str:
        negate = False
        if self.peek() == "^":
            negate = True
            self.pos += 1
        items: list[str] = []
        first = True
        while True:
            if self.pos >= len(self.p):
                raise self.fail("unclosed character class")
            c = self.p[self.pos]
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            if self.flags.x and c in " \t\n\r":
                self.pos += 1
                continue
            if c == "[":
                m = re.compile(r"\[:(\^?)([a-z]+):\]").match(self.p, self.pos)
                if m and m.group(2) in _POSIX:
                    self.pos = m.end()
                    body = _POSIX[m.group(2)]
                    items.append(_posix_item(body, negated=bool(m.group(1))))
                    continue
                raise self.fail("nested character classes are not supported")
            if self.peek(2) in ("&&", "--", "~~"):
                raise self.fail("character class set operations are not supported")
            items.append(self.class_member())
        body = "".join(items)
        if not body:
            raise self.fail("empty character class")
        return ("[^" if negate else "[") + body + "]"

    def class_member(self) -> str:
        start = self.class_single()
        if (
            self.peek() == "-"
            and self.peek(2) != "-]"
            and self.p[self.pos + 1 : self.pos + 2] not in ("]", "")
        ):
            if start is None or len(start) != 1:
                raise self.fail("invalid range start")
            self.pos += 1
            end = self.class_single()
            if end is None or len(end) != 1:
                raise self.fail("invalid range end")
            if ord(end) < ord(start):
                raise self.fail("invalid range")
            return _literal(start, True) + "-" + _literal(end, True)
        if start is None:
            return self.last_class_escape
        return _literal(start, True)

    last_class_escape = ""

    def class_single(self) -> str | None:
        """A single literal character, or None with `last_class_escape` set to a class escape."""
        c = self.p[self.pos]
        self.pos += 1
        if c != "\\":
            return c
        if self.pos >= len(self.p):
            raise self.fail("incomplete escape")
        e = self.p[self.pos]
        if e in _SIMPLE_ESCAPES:
            self.pos += 1
            return {"a": "\x07", "f": "\x0c", "t": "\t", "n": "\n", "r": "\r", "v": "\x0b"}[e]
        if e in "xuU":
            self.pos += 1
            return self.hex_escape(e)
        if e.lower() in _PERL or e in "pP":
            self.last_class_escape = self.escape(in_class=True)
            return None
        if e.isalnum() or e.isspace():
            raise self.fail(f"unsupported escape \\{e} in a class")
        self.pos += 1
        return e


def _negatable(body: str, letter: str) -> str:
    if letter.islower():
        return body
    raise RegexTranslationError(
        f"negated class \\{letter} inside a character class is not supported"
    )


def _posix_item(body: str, negated: bool) -> str:
    if not negated:
        return body
    ranges: list[tuple[int, int]] = []
    for m in re.finditer(r"(\\x[0-9a-f]{2}|\\.|.)(?:-(\\x[0-9a-f]{2}|\\.|.))?", body):
        lo, hi = _posix_char(m.group(1)), _posix_char(m.group(2) or m.group(1))
        ranges.append((lo, hi))
    return _ranges_body(_complement(sorted(ranges)))


def _posix_char(token: str) -> int:
    if token.startswith("\\x"):
        return int(token[2:], 16)
    if token.startswith("\\"):
        return ord({"t": "\t", "n": "\n", "r": "\r"}.get(token[1], token[1]))
    return ord(token)


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= 0x10FFFF:
        out.append((nxt, 0x10FFFF))
    return out


def _ranges_body(ranges: list[tuple[int, int]]) -> str:
    if not ranges:
        raise RegexTranslationError("empty Unicode class")
    return "".join(
        f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges
    )


def _literal(ch: str, in_class: bool) -> str:
    if ch.isalnum() and ch.isascii():
        return ch
    if ord(ch) < 0x80:
        return "\\" + ch if not ch.isspace() and ch.isprintable() else f"\\x{ord(ch):02x}"
    return ch if ch.isprintable() else f"\\x{{{ord(ch):x}}}"
