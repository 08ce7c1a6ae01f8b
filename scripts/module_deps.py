#!/usr/bin/env python3
"""Prints the dependency graph between the top-level modules of each crate (from `crate::x`
paths in non-test code) and any import cycles. Usage: python3 scripts/module_deps.py"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def top_module(src, path):
    rel = os.path.relpath(path, src).split(os.sep)
    if len(rel) == 1:
        return os.path.splitext(rel[0])[0]
    return rel[0]


def graph(src):
    # Top-level modules: files and folders of src/ (re-exports at the root are not modules).
    modules = {os.path.splitext(n)[0] for n in os.listdir(src)}
    deps = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            if "tests" in f or f == "test_util.rs":
                continue
            text = open(path, encoding="utf-8").read()
            # Drop inline test modules and comments.
            text = re.split(r"#\[cfg\(test\)\]", text)[0]
            text = re.sub(r"//.*", "", text)
            me = top_module(src, path)
            if me in ("lib", "main"):
                continue
            used = set(re.findall(r"\bcrate::(\w+)", text))
            deps.setdefault(me, set()).update(u for u in used if u != me and u in modules)
    return deps


def cycles(deps):
    found = []
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in sorted(deps.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(deps):
        if n not in state:
            visit(n, [])
    return found


status = 0
for crate in ["mimo-core", "mimo-data", "mimo-train", "mimo-bench", "."]:
    src = os.path.join(ROOT, crate, "src")
    deps = graph(src)
    name = "mimo (root)" if crate == "." else crate
    print(f"{name}:")
    for m in sorted(deps):
        print(f"  {m} -> {', '.join(sorted(deps[m])) or '-'}")
    cyc = cycles(deps)
    for c in cyc:
        print("  CYCLE: " + " -> ".join(c))
        status = 1
    if not cyc:
        print("  no cycles")
sys.exit(status)
