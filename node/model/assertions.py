"""Response assertions, besides ``expectStatus``: ``expectBody`` (a substring, or ``/regex/`` with flags i, m, s,
matched under a time bound), ``expectJson`` (``[{path, equals}]`` in a small JSONPath subset: ``$``, ``.name``,
``["name"]``, ``[0]``), and ``maxDurationMs``. A run whose response fails one is ``failed``, and its error says
which assertion and why. Checked against the response's first ``ASSERT_BYTES``; never retried (the target did
its work: a retry would do it again)."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import regex  # (imported where a /regex/ is compiled: ~1.7 MB of RSS a node whose jobs have none never needs)

ASSERT_BYTES = 64 * 1024  # the response read for body assertions
REGEX_TIMEOUT = 0.05  # seconds one match may take (a pattern that backtracks badly fails, it never hangs)
MAX_PATTERN = 1000
MAX_JSON_ASSERTIONS = 20
MAX_PATH = 200
_SEGMENT = re.compile(r'\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d{1,6})\]|\["((?:[^"\\]|\\.)*)"\]')
_REGEX = re.compile(r"/(.*)/([ims]*)", re.S)


@dataclass(frozen=True, slots=True)
class BodyExpectation:
    text: str  # as given: a substring, or /regex/flags

    @property
    def pattern(self) -> regex.Pattern[str] | None:
        return compile_regex(self.text)


def is_regex(text: str) -> bool:
    return len(text) >= 2 and _REGEX.fullmatch(text) is not None


@functools.lru_cache(maxsize=2048)
def compile_regex(text: str) -> regex.Pattern[str] | None:
    """The compiled pattern of a ``/regex/flags`` expectation (cached: compiled once, not per fire); None for a
    substring."""
    m = _REGEX.fullmatch(text)
    if m is None or len(text) < 2:
        return None
    import regex

    flags = 0
    for f in m.group(2):
        flags |= {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}[f]
    return regex.compile(m.group(1), flags)


def check_expect_body(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_PATTERN:
        raise ValueError(f"must be a non-empty string of at most {MAX_PATTERN} characters: a substring, or /regex/")
    if is_regex(v):
        import regex

        try:
            compile_regex(v)
        except regex.error as e:
            raise ValueError(f"is not a valid /regex/: {e}") from None
    return v


def parse_path(path: Any) -> tuple[str | int, ...]:
    """``$.a.b[0]["c d"]`` -> ("a", "b", 0, "c d"); ValueError when it is not in the subset."""
    if not isinstance(path, str) or not path.startswith("$") or len(path) > MAX_PATH:
        raise ValueError(f"a path starts with $ and is at most {MAX_PATH} characters ($.status, $.items[0].id)")
    out: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise ValueError(f"path {path[:60]!r}: cannot read it at character {pos + 1} (use .name, [0] or [\"name\"])")
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        else:
            out.append(json.loads(f'"{m.group(3)}"'))
        pos = m.end()
    return tuple(out)


def check_expect_json(v: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(v, list) or not v or len(v) > MAX_JSON_ASSERTIONS:
        raise ValueError(f"must be a list of 1 to {MAX_JSON_ASSERTIONS} {{path, equals}} objects")
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, dict) or set(item) != {"path", "equals"}:
            raise ValueError(f"item {i}: an object with path and equals, nothing else")
        try:
            parse_path(item["path"])
        except ValueError as e:
            raise ValueError(f"item {i}: {e}") from None
        try:
            text = json.dumps(item["equals"], allow_nan=False)
        except (ValueError, TypeError, RecursionError):
            raise ValueError(f"item {i}: equals must be a JSON value (no NaN or Infinity)") from None
        if len(text) > 4096:
            raise ValueError(f"item {i}: equals is longer than 4096 characters as JSON")
        if _depth(item["equals"]) > MAX_EQUALS_DEPTH:
            raise ValueError(f"item {i}: equals nests more than {MAX_EQUALS_DEPTH} levels")
        out.append((item["path"], item["equals"]))
    return tuple(out)


MAX_EQUALS_DEPTH = 10


def _depth(v: Any, level: int = 0) -> int:
    if level > MAX_EQUALS_DEPTH:
        return level
    if isinstance(v, dict):
        return max((_depth(x, level + 1) for x in v.values()), default=level + 1)
    if isinstance(v, list):
        return max((_depth(x, level + 1) for x in v), default=level + 1)
    return level


def same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0; objects and arrays compared the same way all the way down."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _at(doc: Any, path: tuple[str | int, ...]) -> tuple[bool, Any]:
    for seg in path:
        if isinstance(seg, int):
            if not isinstance(doc, list) or seg >= len(doc):
                return False, None
            doc = doc[seg]
        else:
            if not isinstance(doc, dict) or seg not in doc:
                return False, None
            doc = doc[seg]
    return True, doc


def _short(v: Any, secrets: tuple[str, ...] | list[str] = ()) -> str:
    text = json.dumps(v, ensure_ascii=False)
    for s in secrets:  # before the cut: a secret cut in two would no longer be found by the outcome's redaction
        text = text.replace(json.dumps(s, ensure_ascii=False)[1:-1], "***").replace(s, "***")
    return text if len(text) <= 80 else text[:77] + "..."


def check_body(expect_body: str | None, expect_json: tuple[tuple[str, Any], ...], body: str, truncated: bool, *,
               secrets: tuple[str, ...] | list[str] = ()) -> str | None:
    """Why the response fails its body assertions, or None (``secrets``: masked in what it quotes). May block up
    to REGEX_TIMEOUT: call it off the loop when ``expect_body`` is a regex."""
    where = f"the response's first {ASSERT_BYTES} bytes" if truncated else "the response"
    if expect_body is not None:
        pattern = compile_regex(expect_body)
        if pattern is None:
            if expect_body not in body:
                return f"expectBody: {_short(expect_body)} not found in {where}"
        else:
            try:
                if pattern.search(body, timeout=REGEX_TIMEOUT) is None:
                    return f"expectBody: {expect_body[:80]} does not match {where}"
            except TimeoutError:
                return (f"expectBody: {expect_body[:80]} took longer than {int(REGEX_TIMEOUT * 1000)} ms on {where} "
                        "(simplify the pattern)")
    if expect_json:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return f"expectJson: {where} is not JSON (or nests too deeply)"
        for path, want in expect_json:
            found, got = _at(doc, parse_path(path))
            if not found:
                return f"expectJson {path}: not in the response"
            if not same(got, want):
                return f"expectJson {path}: expected {_short(want)}, got {_short(got, secrets)}"
    return None


def too_slow(max_duration_ms: int | None, duration_ms: int) -> str | None:
    if max_duration_ms is not None and duration_ms > max_duration_ms:
        return f"too slow: {duration_ms} ms > maxDurationMs {max_duration_ms}"
    return None
