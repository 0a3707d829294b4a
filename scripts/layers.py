#!/usr/bin/env python3
"""Fails on an import cycle in a Rust library's src/ (see scripts/layers.sh, which runs this).

Reads every library file under ROOT/src (src/bin is a client of the library and is skipped), takes
its `use crate::...`/`use super::...`/`use self::...` declarations and the `crate::`/`super::`
paths written in code, resolves each to the file that defines the item (through `pub use`
re-exports, so a facade `mod.rs` is not mistaken for the definer) and reports:

  * a cycle between files, and
  * a cycle between top-level modules (`engine`, `server`, ...: the first path segment),

except for the edges in ALLOWED below. Comments, string literals and `#[cfg(test)]` modules are
not read: tests may import from anywhere. A bare name brought in by a `pub use` of a child and then
used in the same file is not seen (the facade pattern); everything written as a path is.

Usage: layers.py ROOT      exit 0 (no cycle), 1 (cycles, listed on stderr), 2 (usage)
"""

import os
import re
import sys
from collections import defaultdict, deque

# Edges allowed to close a cycle: (from module, to module, reason). A module is a top-level
# module name or a file's module path (`engine::accept`); an allowed module edge also allows
# every file edge between the two modules.
ALLOWED = [
    (
        "error",
        "endpoint",
        "Error::Bind and friends carry the Endpoint that failed, and endpoint parsing returns "
        "Error: one concept split over two files",
    ),
]


def strip(text):
    """Blanks out comments, string and char literals (keeping newlines, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"\w", text[i - 1:i] or " "):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:  # a char literal; otherwise a lifetime
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(code):
    """Blanks out `#[cfg(test)] mod NAME { ... }` (code is already stripped of comments)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[: m.start()] + re.sub(r"[^\n]", " ", code[m.start():j]) + code[j:]


def expand(tree):
    """`a::{b, c::{d, e as f}}` -> ['a::b', 'a::c::d', 'a::c::e as f']."""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, re.S)
    if not m:
        return [re.sub(r"\s*::\s*", "::", " ".join(tree.split()))]
    prefix, inner = re.sub(r"\s+", "", m.group(1)), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip():
            out += [prefix + p for p in expand(part)]
    return out


class Crate:
    def __init__(self, root):
        self.src = os.path.join(root, "src")
        self.files = {}  # module path ('' for the crate root) -> relative file name
        for dirpath, dirnames, filenames in os.walk(self.src):
            rel = os.path.relpath(dirpath, self.src)
            if rel == "bin" or rel.startswith("bin" + os.sep):
                dirnames[:] = []
                continue
            for name in filenames:
                if not name.endswith(".rs"):
                    continue
                parts = [] if rel == "." else rel.split(os.sep)
                if name not in ("mod.rs", "lib.rs") or (name == "lib.rs" and parts):
                    parts.append(name[:-3])
                self.files["::".join(parts)] = os.path.relpath(os.path.join(dirpath, name), self.src)
        self.code = {}
        self.uses = {}  # module -> [(line, path text, is re-export)]
        for module, name in self.files.items():
            with open(os.path.join(self.src, name), encoding="utf-8") as f:
                code = drop_test_modules(strip(f.read()))
            self.code[module] = code
            self.uses[module] = list(self.scan(code))
        self.reexports = {m: self.reexport_map(m) for m in self.files}

    @staticmethod
    def scan(code):
        """(line, path, visibility) for each `use` item and each crate::/super::/self:: path."""
        spans = []
        for m in re.finditer(r"(?<![\w:])(pub(\([^)]*\))?\s+)?use\s+([^;]*);", code):
            line = code.count("\n", 0, m.start()) + 1
            spans.append((m.start(), m.end()))
            for item in expand(m.group(3)):
                yield line, item, bool(m.group(1))
        for m in re.finditer(r"(?<![\w:])(crate|super|self)((?:::\w+)+)", code):
            if any(a <= m.start() < b for a, b in spans):
                continue
            yield code.count("\n", 0, m.start()) + 1, m.group(0), False

    def absolute(self, module, path):
        """The path written in `module` as a list of segments from the crate root, or None if it
        names another crate."""
        segs = [s for s in path.split("::") if s]
        base = module.split("::") if module else []
        # `super::` in a file means its parent module; in a `mod.rs` or the crate root, the
        # module itself is the file's module path, so its parent is one up from that too.
        if segs and segs[0] == "crate":
            return segs[1:]
        out = list(base)
        if segs and segs[0] in ("self", "super"):
            while segs and segs[0] in ("self", "super"):
                if segs.pop(0) == "super":
                    if not out:
                        return None
                    out.pop()
            return out + segs
        # A bare first segment: a child module of this one (2018 paths), else another crate.
        if "::".join(base + segs[:1]) in self.files:
            return base + segs
        return None

    def reexport_map(self, module):
        names = {}
        for _, item, public in self.uses[module]:
            if not public or item.endswith("*"):
                continue
            target, _, alias = item.partition(" as ")
            absolute = self.absolute(module, target)
            if absolute is None:
                continue
            names[alias or absolute[-1]] = absolute
        return names

    def definer(self, segs, depth=0):
        """The module whose file defines the item at `segs` (segments from the crate root)."""
        if not segs:
            return ""
        for k in range(len(segs), -1, -1):
            module = "::".join(segs[:k])
            if module in self.files:
                rest = segs[k:]
                if rest and depth < 16 and rest[0] in self.reexports[module]:
                    return self.definer(self.reexports[module][rest[0]] + rest[1:], depth + 1)
                return module
        return ""

    def edges(self):
        """{(from module, to module): (file, line)} for every file-level dependency."""
        found = {}
        for module, uses in self.uses.items():
            if module == "":
                continue  # the crate root declares and re-exports; it is not a layer
            for line, item, public in uses:
                target = self.absolute(module, item.partition(" as ")[0])
                if target is None:
                    continue
                own = module.split("::")
                if public and target[: len(own)] == own:
                    continue  # a facade re-exporting its own child
                to = self.definer(target)
                if to in ("", module):
                    continue
                found.setdefault((module, to), (self.files[module], line))
        return found


def allowed(a, b):
    for x, y, _ in ALLOWED:
        if (a == x or a.startswith(x + "::")) and (b == y or b.startswith(y + "::")):
            return True
    return False


def cycles(nodes, edges):
    """One shortest cycle per strongly connected component with more than one node."""
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            connect(v)
    found = []
    for comp in comps:
        seen = set()
        for start in sorted(comp):
            cycle = shortest_cycle(graph, comp, start)
            key = frozenset(zip(cycle, cycle[1:]))
            if key not in seen:
                seen.add(key)
                found.append((sorted(comp), cycle))
    return found


def shortest_cycle(graph, comp, start):
    """The shortest cycle through `start` inside one strongly connected component."""
    prev, queue = {start: None}, deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError("a strongly connected component without a cycle")


def main(argv):
    if len(argv) != 2 or not os.path.isdir(os.path.join(argv[1], "src")):
        print("usage: layers.py ROOT (a directory with a src/ folder)", file=sys.stderr)
        return 2
    crate = Crate(argv[1])
    file_edges = {e: w for e, w in crate.edges().items() if not allowed(*e)}
    top = lambda m: m.split("::")[0]
    module_edges = {}
    for (a, b), where in sorted(file_edges.items()):
        if top(a) != top(b):
            module_edges.setdefault((top(a), top(b)), where)
    failed = False
    for kind, nodes, edges in (
        ("module", {top(m) for m in crate.files if m}, module_edges),
        ("file", {m for m in crate.files if m}, file_edges),
    ):
        for comp, cycle in cycles(nodes, edges):
            failed = True
            print(f"layers: {kind} cycle: {' -> '.join(cycle)}", file=sys.stderr)
            for a, b in zip(cycle, cycle[1:]):
                name, line = edges[(a, b)]
                print(f"    {a} -> {b}   (src/{name}:{line})", file=sys.stderr)
    if failed:
        return 1
    print(
        f"layers: no import cycle among {len(crate.files) - 1} files and "
        f"{len({top(m) for m in crate.files if m})} top-level modules "
        f"({len(file_edges)} file edges; allowed: "
        + ", ".join(f"{a} -> {b}" for a, b, _ in ALLOWED)
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
