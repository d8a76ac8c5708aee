"""Parsers that accept what the reference engine (Rust) accepts, and the regex dialect."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from nonstop.flags.engine._regex import RegexTranslationError, compile_rust_regex
from nonstop.flags.engine._values import (
    parse_datetime_ns,
    parse_f64,
    parse_network,
    parse_semver,
    parse_usize,
)

F64 = [
    ("12", 12.0),
    ("12.0", 12.0),
    ("+5", 5.0),
    ("5.", 5.0),
    (".5", 0.5),
    ("1e3", 1000.0),
    ("1E-2", 0.01),
    ("inf", math.inf),
    ("-Infinity", -math.inf),
    (" 5", None),  # Python's float() strips spaces; Rust does not
    ("1_0", None),  # Python's float() accepts underscores; Rust does not
    ("0x10", None),
    ("", None),
    ("1e", None),
    ("١٢", None),  # Python's float() accepts other scripts' digits
]


@pytest.mark.parametrize(("text", "expected"), F64)
def test_parse_f64(text: str, expected: float | None) -> None:
    assert parse_f64(text) == expected


def test_parse_f64_nan() -> None:
    value = parse_f64("NaN")
    assert value is not None
    assert math.isnan(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100", 100), ("+7", 7), ("007", 7), ("-0", None), ("1.0", None), ("", None), (" 1", None)],
)
def test_parse_usize(text: str, expected: int | None) -> None:
    assert parse_usize(text) == expected


# 2022-01-22T13:00:00+02:00 is 2022-01-22T11:00:00Z = 1642849200 s since the epoch.
DATES = [
    ("2022-01-22T11:00:00Z", 1642849200 * 10**9),
    ("2022-01-22T13:00:00.000+02:00", 1642849200 * 10**9),
    ("2022-01-22 13:00:00+0200", 1642849200 * 10**9),
    ("2022-01-22t11:00:00.000000001z", 1642849200 * 10**9 + 1),
    ("2022-01-22T11:00:00.1234567891Z", 1642849200 * 10**9 + 123456789),  # ns precision
    ("2022-01-22T11:00:00", None),  # no zone
    ("2022-01-22", None),
    ("2022-02-30T00:00:00Z", None),
    ("2022-01-22T24:00:00Z", None),
]


@pytest.mark.parametrize(("text", "expected"), DATES)
def test_parse_datetime_ns(text: str, expected: int | None) -> None:
    assert parse_datetime_ns(text) == expected


# Each version is lower than the next (semver precedence; build metadata ignored).
ORDERED = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.10.0",
    "2.0.0",
]


@pytest.mark.parametrize(("lower", "higher"), list(pairwise(ORDERED)))
def test_semver_precedence(lower: str, higher: str) -> None:
    low, high = parse_semver(lower), parse_semver(higher)
    assert low is not None
    assert high is not None
    assert low < high


@pytest.mark.parametrize(
    "text", ["01.2.3", "1.2", "v1.2.3", "1.2.3-01", "1.2.3-", "1.2.3+", " 1.2.3"]
)
def test_invalid_semver(text: str) -> None:
    assert parse_semver(text) is None


def test_semver_ignores_build_metadata() -> None:
    assert parse_semver("1.2.3+build.5") == parse_semver("1.2.3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1/32"),
        ("10.1.2.3/8", "10.0.0.0/8"),  # host bits allowed, like the ipnetwork crate
        ("2001:db8::/32", "2001:db8::/32"),
        ("10.0.0.0/33", None),
        ("127.invalid", None),
        ("fe80::1%eth0", None),
        ("01.2.3.4", None),
    ],
)
def test_parse_network(text: str, expected: str | None) -> None:
    net = parse_network(text)
    assert (str(net) if net is not None else None) == expected


# (pattern, text, matches): Rust's semantics where they differ from Python's.
REGEX = [
    ("^cat$", "cat\n", False),  # `$` is the end of the text
    ("(?m)^foo$", "x\nfoo\ny", True),
    ("^(?i)abc$", "AbC", True),  # flags in the middle apply to the rest of the group
    ("a(?i)b|c", "aB", True),
    ("a(?i)b|c", "C", True),  # the flag carries into the next branch
    ("(a(?i)b)c", "aBC", False),  # ...but not past the group
    ("^[[:alpha:]]+$", "é", False),  # POSIX classes are ASCII
    ("^\\d+$", "١٢٣", True),  # \d is Unicode
    ("^\\s$", "\x1c", False),  # Python's \s would match the file separator
    (".", "\n", False),
    ("(?s).", "\n", True),
    ("^\\x{41}\\u{1F600}$", "A😀", True),
    ("^\\pL+$", "Straße", True),
    ("^\\p{Nd}$", "7", True),
    ("^a**$", "aaa", True),  # repetition of a repetition
    ("^\\w+$", "Straße_1", True),  # \w is Unicode
    ("^\\p{Greek}+$", "αβγ", True),  # scripts
    ("^\\p{sc=Greek}$", "a", False),
    ("^(a+)+$", "a" * 25 + "!", False),  # linear time: no backtracking blow-up
    ("a\\b", "a!", True),
    ("(?U)a+", "aaa", True),
    ("(?x) a  b  # comment", "ab", True),
    ("(?P<year>\\d{4})", "2024", True),
]


@pytest.mark.parametrize(("pattern", "text", "matches"), REGEX)
def test_rust_regex_semantics(pattern: str, text: str, matches: bool) -> None:
    assert (compile_rust_regex(pattern).search(text) is not None) is matches


def test_case_insensitive_constraint_flag() -> None:
    assert compile_rust_regex("^abc$", case_insensitive=True).search("ABC") is not None
    assert compile_rust_regex("^(?-i)abc$", case_insensitive=True).search("ABC") is None


@pytest.mark.parametrize(
    "pattern",
    [
        "(regex",
        "^(?=a)b$",
        "(?<!a)b",
        "^(a)\\1$",
        "a{",
        "a{2,1}",
        "*a",
        "[z-a]",
        "(?P<n>a)(?P<n>b)",
        "\\e",
        "[a-z&&b]",
        # Rust accepts these, RE2 cannot express them: refused, with the reason
        "\\b{start}cat",
        "\\<cat\\>",
        "(?Rm)^a$",
        "a{1001}",
        "\\p{Cn}",
        "\\w{1000}",
    ],
)
def test_patterns_rust_rejects_or_we_do_not_translate(pattern: str) -> None:
    with pytest.raises(RegexTranslationError):
        compile_rust_regex(pattern)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("\\b{start}cat", "RE2 (the linear-time engine flags use) cannot express \\b{start}"),
        ("(?Rm)^a", "cannot express multi-line ^ with the CRLF flag R"),
        ("a{1001}", "cannot express it: invalid repetition size: {1001}"),
        ("\\w{1000}", "cannot express it: pattern too large"),
    ],
)
def test_what_re2_cannot_express_says_so(pattern: str, message: str) -> None:
    with pytest.raises(RegexTranslationError) as caught:
        compile_rust_regex(pattern)
    assert message in str(caught.value)


def test_a_lone_surrogate_in_the_text_is_searched_not_raised() -> None:
    assert compile_rust_regex("^a").search("a\ud800") is not None
    assert compile_rust_regex("^b").search("\ud800") is None
