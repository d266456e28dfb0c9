#!/usr/bin/env python3
"""The library's module graph (host/src): which top-level module imports
which. Fails on a cycle; ARCHITECTURE.md's map keeps the graph acyclic
(the binary's files, main.rs, cli.rs and runner.rs, sit on top and are left
out). `--print` lists the edges."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "host", "src")
BINARY = {"main", "cli", "runner", "lib"}


def graph():
    edges = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top in BINARY:
                continue
            text = open(os.path.join(dirpath, f)).read()
            text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
            deps = set(re.findall(r"crate::([a-z_]+)", text))
            for group in re.findall(r"use crate::\{([^}]*)\}", text):
                deps |= {part.strip().split("::")[0] for part in group.split(",")}
            edges.setdefault(top, set()).update(deps - {top})
    return {m: {d for d in deps if d in edges} for m, deps in edges.items()}


def cycles(g):
    state, stack, found = {}, [], []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(g[u]):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(g):
        if u not in state:
            visit(u)
    return found


def main():
    g = graph()
    if "--print" in sys.argv:
        for m in sorted(g):
            print(f"{m} -> {', '.join(sorted(g[m])) or '-'}")
    found = cycles(g)
    for c in found:
        print("import cycle: " + " -> ".join(c), file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"imports: {len(g)} modules, {sum(map(len, g.values()))} edges, no cycle")


main()
