"""Exact language equality of DSL regexes via Brzozowski derivatives (a DFA built lazily).

A DFA state is (expression, class of the previous character): the class is what `\b` needs
(docs/regex_dsl.md). Expressions are hash-consed to ints and normalised (ACI of `|` and `&`,
`~~r = r`, ...), which keeps the derivative set finite. Two regexes are compared by a BFS over
the product automaton on an alphabet partition; a mismatch comes with the shortest witness.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from megajepa.eval import regex_dsl as dsl

_EMPTY, _EPS, _TOP = 0, 1, 2  # fixed ids: no string, the empty string, every string (~empty)
_NONWORD, _WORD = 0, 1


class Undecided(RuntimeError):
    """The automaton grew past its state or node limit; equality is left undecided."""


@dataclass(frozen=True)
class Verdict:
    equal: bool | None  # None: undecided (limit hit)
    witness: str | None  # a string in exactly one language when unequal
    states: int  # product states explored


class _Builder:
    """Hash-consed expression nodes with derivative and nullability memo tables."""

    def __init__(self, max_nodes: int):
        self.max_nodes = max_nodes
        self.keys: list[tuple] = []
        self.ids: dict[tuple, int] = {}
        for key in (("0",), ("e",), ("~", _EMPTY)):
            self._intern(key)
        self._deriv: dict[tuple[int, int, int], int] = {}
        self._null: dict[tuple[int, int, int], bool] = {}

    def _intern(self, key: tuple) -> int:
        node = self.ids.get(key)
        if node is None:
            if len(self.keys) >= self.max_nodes:
                raise Undecided(f"more than {self.max_nodes} expression nodes")
            node = self.ids[key] = len(self.keys)
            self.keys.append(key)
        return node

    # ---- smart constructors -------------------------------------------------------------
    def chars(self, mask: int) -> int:
        return self._intern(("s", mask)) if mask else _EMPTY

    def cat(self, a: int, b: int) -> int:
        if a == _EMPTY or b == _EMPTY:
            return _EMPTY
        if a == _EPS:
            return b
        if b == _EPS:
            return a
        ka = self.keys[a]
        if ka[0] == ".":  # keep concatenation right-nested so derivatives only touch the head
            return self.cat(ka[1], self.cat(ka[2], b))
        return self._intern((".", a, b))

    def _assoc(self, op: str, items) -> set[int]:
        flat: set[int] = set()
        for n in items:
            key = self.keys[n]
            flat.update(key[1]) if key[0] == op else flat.add(n)
        return flat

    def union(self, items) -> int:
        flat = self._assoc("|", items)
        flat.discard(_EMPTY)
        if _TOP in flat:
            return _TOP
        sets = [n for n in flat if self.keys[n][0] == "s"]
        if len(sets) > 1:  # a union of character sets is one character set
            flat.difference_update(sets)
            flat.add(self.chars(_or_masks(self.keys[n][1] for n in sets)))
        return self._nary("|", flat, _EMPTY)

    def inter(self, items) -> int:
        flat = self._assoc("&", items)
        if _EMPTY in flat:
            return _EMPTY
        flat.discard(_TOP)
        sets = [n for n in flat if self.keys[n][0] == "s"]
        if len(sets) > 1:
            flat.difference_update(sets)
            mask = dsl.FULL
            for n in sets:
                mask &= self.keys[n][1]
            if not mask:
                return _EMPTY
            flat.add(self.chars(mask))
        return self._nary("&", flat, _TOP)

    def _nary(self, op: str, flat: set[int], unit: int) -> int:
        if not flat:
            return unit
        if len(flat) == 1:
            return next(iter(flat))
        return self._intern((op, frozenset(flat)))

    def compl(self, a: int) -> int:
        key = self.keys[a]
        return key[1] if key[0] == "~" else self._intern(("~", a))

    def star(self, a: int) -> int:
        key = self.keys[a]
        if a in (_EMPTY, _EPS) or key[0] == "*":
            return _EPS if a == _EMPTY else a
        if a == _TOP or key == ("s", dsl.FULL):  # `.*` matches every span
            return _TOP
        return self._intern(("*", a))

    def boundary(self) -> int:
        return self._intern(("b",))

    # ---- semantics ----------------------------------------------------------------------
    def nullable(self, n: int, prev: int, nxt: int) -> bool:
        """Does `n` match the empty span between a `prev`-class and a `nxt`-class character?"""
        memo = (n, prev, nxt)
        hit = self._null.get(memo)
        if hit is not None:
            return hit
        key = self.keys[n]
        op = key[0]
        if op in ("0", "s"):
            out = False
        elif op in ("e", "*"):
            out = True
        elif op == "b":
            out = prev != nxt
        elif op == ".":
            out = self.nullable(key[1], prev, nxt) and self.nullable(key[2], prev, nxt)
        elif op == "|":
            out = any(self.nullable(m, prev, nxt) for m in key[1])
        elif op == "&":
            out = all(self.nullable(m, prev, nxt) for m in key[1])
        else:  # "~"
            out = not self.nullable(key[1], prev, nxt)
        self._null[memo] = out
        return out

    def deriv(self, n: int, prev: int, c: int) -> int:
        """Residual of `n` after consuming character index `c` preceded by class `prev`."""
        memo = (n, prev, c)
        hit = self._deriv.get(memo)
        if hit is not None:
            return hit
        key = self.keys[n]
        op = key[0]
        if op in ("0", "e", "b"):
            out = _EMPTY
        elif op == "s":
            out = _EPS if key[1] >> c & 1 else _EMPTY
        elif op == ".":
            out = self.cat(self.deriv(key[1], prev, c), key[2])
            if self.nullable(key[1], prev, _word(c)):
                out = self.union((out, self.deriv(key[2], prev, c)))
        elif op == "|":
            out = self.union(self.deriv(m, prev, c) for m in key[1])
        elif op == "&":
            out = self.inter(self.deriv(m, prev, c) for m in key[1])
        elif op == "~":
            out = self.compl(self.deriv(key[1], prev, c))
        else:  # "*": the first non-empty iteration consumes c
            out = self.cat(self.deriv(key[1], prev, c), n)
        self._deriv[memo] = out
        return out

    # ---- AST -> node ----------------------------------------------------------------------
    def build(self, ast) -> int:
        if isinstance(ast, dsl.CharSet):
            return self.chars(ast.mask)
        if isinstance(ast, dsl.Epsilon):
            return _EPS
        if isinstance(ast, dsl.Boundary):
            return self.boundary()
        if isinstance(ast, dsl.Concat):
            out = _EPS
            for item in reversed(ast.items):
                out = self.cat(self.build(item), out)
            return out
        if isinstance(ast, dsl.Union):
            return self.union([self.build(i) for i in ast.items])
        if isinstance(ast, dsl.Inter):
            return self.inter([self.build(i) for i in ast.items])
        if isinstance(ast, dsl.Compl):
            return self.compl(self.build(ast.item))
        if isinstance(ast, dsl.Repeat):
            return self._repeat(self.build(ast.item), ast.lo, ast.hi)
        raise TypeError(f"not a DSL AST node: {ast!r}")

    def _repeat(self, r: int, lo: int, hi: int | None) -> int:
        # r{lo,hi} = r^lo (r (r (...)?)?)? ; r{lo,} = r^lo r*
        tail = self.star(r) if hi is None else _EPS
        if hi is not None:
            for _ in range(hi - lo):
                tail = self.union((_EPS, self.cat(r, tail)))
        for _ in range(lo):
            tail = self.cat(r, tail)
        return tail


def _or_masks(masks) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


def _word(c: int) -> int:
    return dsl.WORD >> c & 1


def _masks(ast, out: set[int]) -> set[int]:
    """Every character-set mask in the AST (to build the alphabet partition)."""
    if isinstance(ast, dsl.CharSet):
        out.add(ast.mask)
    children = getattr(ast, "items", None) or ([ast.item] if hasattr(ast, "item") else [])
    for child in children:
        _masks(child, out)
    return out


def partition(masks) -> list[int]:
    """One representative character index per class of characters no mask tells apart."""
    masks = list(masks) + [dsl.WORD]
    reps: dict[tuple, int] = {}
    for c in range(len(dsl.UNIVERSE)):
        reps.setdefault(tuple(m >> c & 1 for m in masks), c)
    return sorted(reps.values())


def _as_ast(regex):
    return dsl.parse(regex) if isinstance(regex, str) else regex


def compare(a, b, max_states: int = 20000, max_nodes: int = 200000) -> Verdict:
    """Decide L(a) == L(b) for DSL regexes (text or AST); RegexSyntaxError if one is not DSL."""
    ast_a, ast_b = _as_ast(a), _as_ast(b)
    try:
        return _compare(ast_a, ast_b, max_states, max_nodes)
    except (Undecided, RecursionError):
        return Verdict(None, None, max_states)


def _compare(ast_a, ast_b, max_states: int, max_nodes: int) -> Verdict:
    bld = _Builder(max_nodes)
    start = (bld.build(ast_a), bld.build(ast_b), _NONWORD)
    reps = partition(_masks(ast_a, set()) | _masks(ast_b, set()))
    parent: dict[tuple, tuple | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        x, y, prev = state
        if x == y:  # same expression, same context: same future
            continue
        if bld.nullable(x, prev, _NONWORD) != bld.nullable(y, prev, _NONWORD):
            return Verdict(False, _witness(parent, state), len(parent))
        for c in reps:
            nxt = (bld.deriv(x, prev, c), bld.deriv(y, prev, c), _word(c))
            if nxt not in parent:
                if len(parent) >= max_states:
                    raise Undecided(f"more than {max_states} product states")
                parent[nxt] = (state, c)
                queue.append(nxt)
    return Verdict(True, None, len(parent))


def _witness(parent: dict, state: tuple) -> str:
    chars = []
    while parent[state] is not None:
        state, c = parent[state]
        chars.append(dsl.UNIVERSE[c])
    return "".join(reversed(chars))


def equivalent(a, b, **limits) -> bool | None:
    """True/False for equal/unequal languages, None when undecided within the limits."""
    return compare(a, b, **limits).equal


def matches(regex, text: str, max_nodes: int = 200000) -> bool:
    """Membership of a printable-ASCII string in the regex language (runs the derivative DFA)."""
    bld = _Builder(max_nodes)
    n, prev = bld.build(_as_ast(regex)), _NONWORD
    for ch in text:
        c = ord(ch) - dsl.FIRST
        if not 0 <= c < len(dsl.UNIVERSE):
            return False
        n, prev = bld.deriv(n, prev, c), _word(c)
    return bld.nullable(n, prev, _NONWORD)
