"""Parser for the NL-RX regex DSL (semantics in docs/regex_dsl.md) into a small AST.

Precedence, loosest first (as in dk.brics.automaton, which NL-RX was built on):
`|` union, `&` intersection, concatenation, postfix `* + ? {n} {n,} {n,m}`, prefix `~`.
"""

from __future__ import annotations

from dataclasses import dataclass

# Universe: printable ASCII 0x20..0x7E; a character set is a bitmask over it (bit i = chr(32+i)).
FIRST, LAST = 0x20, 0x7E
UNIVERSE = "".join(chr(c) for c in range(FIRST, LAST + 1))
FULL = (1 << len(UNIVERSE)) - 1
WORD = sum(1 << (ord(c) - FIRST) for c in UNIVERSE if c.isalnum() or c == "_")
MAX_REPEAT = 1000  # larger bounds are rejected as unparsable rather than expanded
_META = set("()[]{}|&~*+?.\\")


class RegexSyntaxError(ValueError):
    """The text is not in the DSL; `pos` is the offending character offset."""

    def __init__(self, msg: str, text: str, pos: int):
        super().__init__(f"{msg} at offset {pos} in {text!r}")
        self.pos = pos


@dataclass(frozen=True)
class CharSet:  # one character from `mask`; `.` is CharSet(FULL)
    mask: int


@dataclass(frozen=True)
class Epsilon:  # `()`: the empty string
    pass


@dataclass(frozen=True)
class Boundary:  # `\b`: zero-width word boundary
    pass


@dataclass(frozen=True)
class Concat:
    items: tuple


@dataclass(frozen=True)
class Union:
    items: tuple


@dataclass(frozen=True)
class Inter:
    items: tuple


@dataclass(frozen=True)
class Compl:
    item: object


@dataclass(frozen=True)
class Repeat:  # item{lo,hi}; hi None = unbounded (`*` is {0,}, `+` {1,}, `?` {0,1})
    item: object
    lo: int
    hi: int | None


def char_mask(chars: str) -> int:
    """Bitmask of the given characters (all must be printable ASCII)."""
    mask = 0
    for c in chars:
        if not FIRST <= ord(c) <= LAST:
            raise ValueError(f"character {c!r} is outside the printable-ASCII universe")
        mask |= 1 << (ord(c) - FIRST)
    return mask


class _Parser:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def error(self, msg: str):
        raise RegexSyntaxError(msg, self.text, self.pos)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            self.error("unexpected end")
        self.pos += 1
        return c

    def union(self):
        items = [self.inter()]
        while self.peek() == "|":
            self.pos += 1
            items.append(self.inter())
        return items[0] if len(items) == 1 else Union(tuple(items))

    def inter(self):
        items = [self.concat()]
        while self.peek() == "&":
            self.pos += 1
            items.append(self.concat())
        return items[0] if len(items) == 1 else Inter(tuple(items))

    def concat(self):
        items = []
        while self.peek() and self.peek() not in "|&)":
            items.append(self.repeat())
        if not items:
            self.error("empty operand")
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def repeat(self):
        node = self.unary()
        while True:
            c = self.peek()
            if c in ("*", "+", "?") and c:
                self.pos += 1
                node = Repeat(node, *{"*": (0, None), "+": (1, None), "?": (0, 1)}[c])
            elif c == "{":
                node = Repeat(node, *self.bounds())
            else:
                return node

    def bounds(self) -> tuple[int, int | None]:
        self.pos += 1  # '{'
        lo = self.number()
        hi: int | None = lo
        if self.peek() == ",":
            self.pos += 1
            hi = self.number() if self.peek().isdigit() else None
        if self.take() != "}":
            self.pos -= 1
            self.error("expected '}'")
        if hi is not None and hi < lo:
            self.error(f"bad repeat bounds {{{lo},{hi}}}")
        return lo, hi

    def number(self) -> int:
        start = self.pos
        while self.peek().isdigit():
            self.pos += 1
        if start == self.pos:
            self.error("expected a number")
        value = int(self.text[start : self.pos])
        if value > MAX_REPEAT:
            self.error(f"repeat bound {value} exceeds {MAX_REPEAT}")
        return value

    def unary(self):
        if self.peek() == "~":
            self.pos += 1
            return Compl(self.unary())
        return self.atom()

    def atom(self):
        c = self.take()
        if c == "(":
            if self.peek() == ")":
                self.pos += 1
                return Epsilon()
            node = self.union()
            if self.peek() != ")":
                self.error("expected ')'")
            self.pos += 1
            return node
        if c == "[":
            return CharSet(self.char_class())
        if c == ".":
            return CharSet(FULL)
        if c == "\\":
            return self.escape()
        if c in _META:
            self.pos -= 1
            self.error(f"unexpected {c!r}")
        return CharSet(self.literal(c))

    def escape(self):
        c = self.take()
        if c == "b":
            return Boundary()
        if c.isalnum():
            self.pos -= 1
            self.error(f"unsupported escape \\{c}")
        return CharSet(self.literal(c))

    def literal(self, c: str) -> int:
        if not FIRST <= ord(c) <= LAST:
            self.pos -= 1
            self.error(f"character {c!r} outside printable ASCII")
        return 1 << (ord(c) - FIRST)

    def char_class(self) -> int:
        negate = self.peek() == "^"
        if negate:
            self.pos += 1
        mask, first = 0, True
        while first or self.peek() != "]":
            first = False
            lo = self.class_char()
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                hi = self.class_char()
                if ord(hi) < ord(lo):
                    self.error(f"bad range {lo}-{hi}")
                mask |= char_mask("".join(chr(o) for o in range(ord(lo), ord(hi) + 1)))
            else:
                mask |= char_mask(lo)
        self.pos += 1  # ']'
        return FULL & ~mask if negate else mask

    def class_char(self) -> str:
        c = self.take()
        if c == "\\":
            c = self.take()
        if not FIRST <= ord(c) <= LAST:
            self.pos -= 1
            self.error(f"character {c!r} outside printable ASCII")
        return c


def parse(text: str):
    """Parse one DSL regex (surrounding whitespace ignored) into an AST; RegexSyntaxError if not."""
    p = _Parser(text.strip())
    try:
        node = p.union()
    except RecursionError:  # a degenerate prediction such as 500 nested parentheses
        raise RegexSyntaxError("nesting too deep", p.text, p.pos) from None
    if p.pos != len(p.text):
        p.error(f"unexpected {p.peek()!r}")
    return node
