#!/usr/bin/env python3
"""Fails when the sidecar's modules import each other in a cycle.

Reads every `crate::` path in sidecar/src (in `use` lines and inline paths; code after a
file's `#[cfg(test)]` is left out: unit tests may reach anywhere), resolves each to the module
file it names, and checks two graphs: modules (files) and top-level folders (`process`,
`grpc`, `versions`, ...). Either having a cycle is an error: arrows must point down, so that
each folder can be read knowing only the folders below it. Prints the folders in layer order
(top first) when there is none.

Usage: python3 .ci/module_cycles.py [sidecar/src]
"""
import pathlib
import re
import sys


def module_of(path, root):
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts == ["lib"]:
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def code_lines(text):
    """The file's code before its unit tests, without comments."""
    text = text.split("#[cfg(test)]", 1)[0]
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def use_paths(code):
    """Every `crate::a::b...` path, with `use crate::{x, y::z}` groups expanded."""
    paths = []
    for group in re.finditer(r"crate::((?:\w+::)*)\{([^}]*)\}", code):
        prefix = [p for p in group.group(1).split("::") if p]
        for item in group.group(2).split(","):
            item = item.strip().split(" as ")[0]
            if item and item != "self":
                paths.append(prefix + [p for p in item.split("::") if p])
            elif item == "self":
                paths.append(prefix)
    code = re.sub(r"crate::((?:\w+::)*)\{[^}]*\}", "", code)
    for m in re.finditer(r"crate((?:::\w+)+)", code):
        paths.append([p for p in m.group(1).split("::") if p])
    return paths


def resolve(path, modules):
    """The longest prefix of `path` that is a module of the crate."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in modules:
            return tuple(path[:n])
    return None


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layers(graph):
    """Folders top first: each before everything it uses."""
    order, done = [], set()

    def depth(v, seen=()):
        below = [depth(w, seen + (v,)) for w in graph.get(v, ()) if w not in seen]
        return 1 + max(below, default=0)

    return sorted(graph, key=lambda v: (-depth(v), v))


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "sidecar/src")
    files = {module_of(p, root): p for p in root.rglob("*.rs") if p.name != "main.rs"}
    modules = set(files)
    graph = {m: set() for m in modules}
    for module, path in files.items():
        for use in use_paths(code_lines(path.read_text())):
            target = resolve(use, modules)
            if target is None:
                continue
            # A module's own children (its `pub use` re-exports) are below it, not beside it.
            if target != module:
                graph[module].add(target)
    name = lambda m: "crate::" + "::".join(m) if m else "crate"
    failed = False
    for component in cycles(graph):
        failed = True
        print("module cycle: " + " <-> ".join(name(m) for m in component))
        for m in component:
            for t in sorted(graph[m] & set(component)):
                print(f"    {name(m)} uses {name(t)}")
    folder = lambda m: m[0] if m else "lib"
    folders = {}
    for m, targets in graph.items():
        folders.setdefault(folder(m), set())
        for t in targets:
            if folder(t) != folder(m) and folder(m) != "lib":
                folders[folder(m)].add(folder(t))
    for component in cycles(folders):
        failed = True
        print("folder cycle: " + " <-> ".join(component))
        for f in component:
            for m in sorted(x for x in graph if folder(x) == f):
                for t in sorted(graph[m]):
                    if folder(t) in component and folder(t) != f:
                        print(f"    {name(m)} uses {name(t)}")
    if failed:
        print("arrows must point down: move the shared piece below both, or pass it in")
        return 1
    print("no import cycle among", len(modules), "modules; folders top to bottom:")
    for f in layers(folders):
        if f != "lib":
            uses = ", ".join(sorted(folders[f])) or "nothing in the crate"
            print(f"  {f:<16} uses {uses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
