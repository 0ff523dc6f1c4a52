"""Labels (a job's string map, Kubernetes' key/value syntax) and label selectors (kubectl's syntax).

A selector is requirements joined by commas, all of which must hold (AND):

    team=billing   team==billing   team!=billing   team in (billing, ops)   team notin (ops)   team   !team

``!=`` and ``notin`` also match a job without the key, as kubectl's do. A selector is checked in Python
(``matches``) and in SQL (``store/codec.selector_sql``), from the same parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_LABELS = 32
MAX_SELECTOR = 1000
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
KEY = re.compile(rf"({_PREFIX}/)?{_NAME}")
VALUE = re.compile(rf"({_NAME})?")
KEY_PATTERN = f"^({_PREFIX}/)?{_NAME}$"  # (JSON Schema)
VALUE_PATTERN = f"^({_NAME})?$"


class LabelError(ValueError):
    pass


def check_labels(v: Any) -> dict[str, str]:
    """A job's labels: at most 32, keys ``[prefix/]name`` (prefix a DNS subdomain of at most 253 characters, name
    at most 63 alphanumerics, ``-``, ``_``, ``.``, starting and ending alphanumeric), values the same as a name
    or empty."""
    if not isinstance(v, dict):
        raise LabelError("must be an object of string values")
    if len(v) > MAX_LABELS:
        raise LabelError(f"at most {MAX_LABELS} labels")
    out: dict[str, str] = {}
    for k, val in v.items():
        check_key(k)
        if not isinstance(val, str) or not VALUE.fullmatch(val):
            raise LabelError(f"label {str(k)[:80]!r}: a value is at most 63 letters, digits, '-', '_' or '.', "
                             "starting and ending with a letter or digit (or empty)")
        out[k] = val
    return dict(sorted(out.items()))


def check_key(k: Any) -> str:
    if not isinstance(k, str) or not KEY.fullmatch(k) or len(k.partition("/")[0]) > 253 and "/" in k:
        raise LabelError(f"label key {str(k)[:80]!r} is not [prefix/]name (name: at most 63 letters, digits, '-', "
                         "'_' or '.', starting and ending with a letter or digit)")
    return k


class Op(StrEnum):
    EQ = "="
    NE = "!="
    IN = "in"
    NOTIN = "notin"
    EXISTS = "exists"
    ABSENT = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.key)
        if self.op is Op.EQ:
            return have == self.values[0]
        if self.op is Op.NE:
            return have != self.values[0]
        if self.op is Op.IN:
            return have is not None and have in self.values
        if self.op is Op.NOTIN:
            return have is None or have not in self.values
        if self.op is Op.EXISTS:
            return have is not None
        return have is None

    def __str__(self) -> str:
        if self.op in (Op.EQ, Op.NE):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in (Op.IN, Op.NOTIN):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return self.key if self.op is Op.EXISTS else f"!{self.key}"


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __and__(self, other: Selector | None) -> Selector:
        return self if other is None else Selector(self.requirements + other.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


def parse_selector(text: str) -> Selector:
    """kubectl's selector syntax; ``LabelError`` says what is wrong and where."""
    if not isinstance(text, str) or len(text) > MAX_SELECTOR:
        raise LabelError(f"a selector is a string of at most {MAX_SELECTOR} characters")
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or not m.group(1):
            raise LabelError(f"selector {text[:80]!r}: cannot read it at character {pos + 1}")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    reqs: list[Requirement] = []
    i = 0

    def need(what: str) -> str:
        nonlocal i
        if i >= len(tokens):
            raise LabelError(f"selector {text[:80]!r}: {what} expected at its end")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        tok = need("a key")
        if tok == "!":
            reqs.append(Requirement(_key(need("a key after !"), text), Op.ABSENT))
        else:
            key = _key(tok, text)
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt in ("=", "==", "!="):
                i += 1
                value = need("a value") if i < len(tokens) and tokens[i] != "," else ""
                if value in ("=", "==", "!=", "(", ")", "!"):
                    raise LabelError(f"selector {text[:80]!r}: a value expected after {key}{nxt}")
                reqs.append(Requirement(key, Op.NE if nxt == "!=" else Op.EQ, (_value(value, text),)))
            elif nxt in ("in", "notin"):
                i += 1
                if need("(") != "(":
                    raise LabelError(f"selector {text[:80]!r}: '(' expected after {key} {nxt}")
                values: list[str] = []
                while True:
                    v = need("a value or ')'")
                    if v == ")" and not values:
                        raise LabelError(f"selector {text[:80]!r}: {key} {nxt} () names no value")
                    if v == ")":
                        break
                    values.append(_value(v, text))
                    sep = need("',' or ')'")
                    if sep == ")":
                        break
                    if sep != ",":
                        raise LabelError(f"selector {text[:80]!r}: ',' or ')' expected in {key} {nxt} (...)")
                reqs.append(Requirement(key, Op.IN if nxt == "in" else Op.NOTIN, tuple(values)))
            elif nxt == ",":
                reqs.append(Requirement(key, Op.EXISTS))
            else:
                raise LabelError(f"selector {text[:80]!r}: '=', '!=', 'in', 'notin' or ',' expected after {key}")
        if i < len(tokens):
            if tokens[i] != ",":
                raise LabelError(f"selector {text[:80]!r}: ',' expected between requirements")
            i += 1
            if i >= len(tokens):
                raise LabelError(f"selector {text[:80]!r}: a requirement expected after the last ','")
    if not reqs:
        raise LabelError("a selector names at least one requirement")
    return Selector(tuple(reqs))


def _key(tok: str, text: str) -> str:
    try:
        return check_key(tok)
    except LabelError:
        raise LabelError(f"selector {text[:80]!r}: {tok[:80]!r} is not a label key") from None


def _value(tok: str, text: str) -> str:
    if not VALUE.fullmatch(tok):
        raise LabelError(f"selector {text[:80]!r}: {tok[:80]!r} is not a label value")
    return tok
