#!/usr/bin/env python3
"""check_layers.py: the layer rule of ebbmalloc, checked against the includes.

The rule is written once, in docs/architecture.md, as a fenced code block
tagged `layers` (there must be exactly one), one line per source folder:

    ```layers
    # folder: folders its files may include, besides its own
    os: include
    core/base: os include
    core/pages: core/base os include
    tcache: core/pages core/base os include
    include:
    ```

A folder is a path relative to the repository root, with '/' between parts.
A line names one folder, a colon, then the folders its files may include
headers from, separated by spaces (none: nothing but its own folder). A
folder is exactly the one written: `core` in a rule does not cover
`core/pages`, and nothing is inherited (if core/pages may include core/base,
and core/base may include os, core/pages may include os only if its own line
says so). Blank lines and text after '#' are ignored.

The script reads every .c, .h and .cpp file under os/, core/, tcache/,
include/ (recursively) and under any other top-level folder the rule names,
and every `#include "..."` line in them. An include is resolved as the
compiler does with ebbmalloc's -I flags: next to the including file first,
then under include/, then from the repository root; an include that names no
file of the tree (a system or Concurrency Kit header) is not checked. It
fails, with one line per violation, when:

  (a) a file includes a header of a folder its folder's rule does not name
      ("core/api/api.c:16: includes tcache/tcache.h: rule 'core: os include'
      does not allow tcache");
  (b) a folder holds sources but has no line in the rule;
  (c) modules include each other in a loop: a module is a file stem in one
      folder (x.c and x.h are module x); module A depends on B when a file of
      A includes a file of B. Each loop is printed as its modules in order
      ("module cycle: page_heap -> background -> page_heap"); every
      dependency that lies on some loop appears in at least one printed loop,
      so the list says which includes to break;
  (d) folders include each other in a loop (the same, folder by folder), or
      the rule itself allows a loop.

Usage: check_layers.py [--root DIR] [--rule FILE] [--edges]
  --root   the repository (default: two folders above this script)
  --rule   the file holding the `layers` block (default ROOT/docs/architecture.md)
  --edges  also print every include from one folder to another, allowed or
           not ("edge: core/api/api.c -> tcache/tcache.h")
Exit status: 0 when the tree keeps the rule, 1 when it does not, 2 when the
rule cannot be read. Python 3 standard library only.
"""

import argparse
import collections
import os
import re
import sys

SOURCE_SUFFIXES = (".c", ".h", ".cpp")
SCANNED_TOP = ("os", "core", "tcache", "include")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


class RuleError(Exception):
    pass


def read_rule(path):
    """The `layers` block of `path` as {folder: set of allowed folders}."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise RuleError("%s: %s" % (path, e.strerror))
    blocks = []
    current = None
    for n, line in enumerate(lines, 1):
        if current is None:
            if re.match(r"^\s*```\s*layers\s*$", line):
                current = (n, [])
        elif re.match(r"^\s*```\s*$", line):
            blocks.append(current)
            current = None
        else:
            current[1].append((n, line))
    if current is not None:
        raise RuleError("%s:%d: the `layers` block is not closed" % (path, current[0]))
    if len(blocks) != 1:
        raise RuleError("%s: %d `layers` blocks, expected exactly one" % (path, len(blocks)))
    rule = {}
    for n, line in blocks[0][1]:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if ":" not in text:
            raise RuleError("%s:%d: expected 'folder: allowed folders', got '%s'" % (path, n, text))
        folder, allowed = text.split(":", 1)
        folder = folder.strip().strip("/")
        if not folder or folder in rule:
            raise RuleError("%s:%d: empty or repeated folder '%s'" % (path, n, folder))
        rule[folder] = set(a.strip("/") for a in allowed.split())
    return rule


def scan(root, rule):
    """{file: [(line, include text, target file or None)]} for every source."""
    tops = set(SCANNED_TOP) | set(f.split("/")[0] for f in rule)
    files = []
    for top in sorted(tops):
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(SOURCE_SUFFIXES):
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    files.append(rel.replace(os.sep, "/"))
    fileset = set(files)
    includes = {}
    for rel in files:
        here = os.path.dirname(rel)
        found = []
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                m = INCLUDE_RE.match(line)
                if not m:
                    continue
                text = m.group(1)
                target = None
                for cand in (os.path.join(here, text), os.path.join("include", text), text):
                    cand = os.path.normpath(cand).replace(os.sep, "/")
                    if cand in fileset:
                        target = cand
                        break
                found.append((n, text, target))
        includes[rel] = found
    return includes


def folder_of(path):
    return os.path.dirname(path)


def module_of(path):
    return os.path.splitext(path)[0]


def sccs(graph):
    """Strongly connected components of {node: set(nodes)} with more than one
    node (Tarjan's algorithm, iterative), each sorted, in a stable order."""
    index = {}
    low = {}
    on_stack = set()
    stack = []
    out = []
    counter = [0]
    nodes = sorted(set(graph) | set(v for vs in graph.values() for v in vs))
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    v = stack.pop()
                    on_stack.discard(v)
                    comp.append(v)
                    if v == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def shortest_path(graph, src, dst, within):
    """Nodes of a shortest path src .. dst inside `within` (BFS), or None."""
    prev = {src: None}
    queue = collections.deque([src])
    while queue:
        v = queue.popleft()
        if v == dst:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in sorted(graph.get(v, ())):
            if w in within and w not in prev:
                prev[w] = v
                queue.append(w)
    return None


def cycles(graph):
    """Loops that together use every edge lying on some loop: for each edge
    u -> v inside a strongly connected component, u -> v and then the
    shortest way back from v to u. Each loop is listed once, starting at its
    smallest node."""
    seen = set()
    out = []
    for comp in sccs(graph):
        members = set(comp)
        for u in comp:
            for v in sorted(graph.get(u, ())):
                if v not in members:
                    continue
                back = shortest_path(graph, v, u, members)
                loop = [u] + back[:-1]
                k = loop.index(min(loop))
                loop = loop[k:] + loop[:k]
                if tuple(loop) not in seen:
                    seen.add(tuple(loop))
                    out.append(loop)
    return out


def check(root, rule_path, show_edges=False, out=sys.stdout):
    """Prints the violations; returns their number."""
    rule = read_rule(rule_path)
    includes = scan(root, rule)
    problems = []

    # (b) every folder that holds sources has a rule line.
    folders = sorted(set(folder_of(f) for f in includes))
    for folder in folders:
        if folder not in rule:
            problems.append("%s/: holds sources but has no line in the `layers` rule" % folder)

    # (a) includes across the rule; and the graphs for (c) and (d).
    module_graph = collections.defaultdict(set)
    folder_graph = collections.defaultdict(set)
    for rel in sorted(includes):
        here = folder_of(rel)
        for n, text, target in includes[rel]:
            if target is None:
                continue
            there = folder_of(target)
            if module_of(target) != module_of(rel):
                module_graph[module_of(rel)].add(module_of(target))
            if there == here:
                continue
            folder_graph[here].add(there)
            if show_edges:
                print("edge: %s -> %s" % (rel, target), file=out)
            if here in rule and there not in rule[here]:
                allowed = " ".join(sorted(rule[here]))
                problems.append("%s:%d: includes %s: rule '%s: %s' does not allow %s"
                                % (rel, n, target, here, allowed, there))

    # (c) module loops, named by stem when the stem is unique.
    modules = set(module_graph) | set(v for vs in module_graph.values() for v in vs)
    stems = collections.Counter(os.path.basename(m) for m in modules)

    def name(m):
        return os.path.basename(m) if stems[os.path.basename(m)] == 1 else m

    for loop in cycles(module_graph):
        problems.append("module cycle: " + " -> ".join(name(m) for m in loop + loop[:1]))

    # (d) folder loops, in the includes and in the rule itself.
    for loop in cycles(folder_graph):
        problems.append("folder cycle: " + " -> ".join(loop + loop[:1]))
    rule_graph = {f: set(a for a in allowed if a != f) for f, allowed in rule.items()}
    for loop in cycles(rule_graph):
        problems.append("rule cycle: the `layers` rule lets " + " -> ".join(loop + loop[:1])
                        + " include each other")

    for p in problems:
        print(p, file=out)
    nincl = sum(1 for v in includes.values() for _, _, t in v if t)
    if not problems:
        print("check_layers: %d files, %d includes of the tree, %d folders in the rule: ok"
              % (len(includes), nincl, len(rule)), file=out)
    return len(problems)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="Check ebbmalloc's includes against its layer rule.")
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")))
    ap.add_argument("--rule", help="file with the `layers` block (default ROOT/docs/architecture.md)")
    ap.add_argument("--edges", action="store_true", help="print every cross-folder include")
    args = ap.parse_args()
    rule_path = args.rule or os.path.join(args.root, "docs", "architecture.md")
    try:
        n = check(args.root, rule_path, args.edges)
    except RuleError as e:
        print("check_layers: %s" % e, file=sys.stderr)
        return 2
    return 1 if n else 0


if __name__ == "__main__":
    sys.exit(main())
