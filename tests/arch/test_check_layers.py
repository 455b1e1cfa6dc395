#!/usr/bin/env python3
"""test_check_layers.py: the self-test of check_layers.py (ctest arch.check_layers_selftest).

Builds small source trees in a temporary folder, each with its own
docs/architecture.md rule, runs the checker on each, and asserts its exit
status and the lines it prints: a tree that keeps the rule passes; a
cross-layer include, a folder missing from the rule, a module loop, a folder
loop (allowed by a looping rule) and a broken rule block each fail with the
line that names them. Exits non-zero at the first wrong verdict.
"""

import os
import subprocess
import sys
import tempfile

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_layers.py")

GOOD_RULE = """\
# arch

```layers
# folder: what it may include
include:
os: include
core/base: os include
core/pages: core/base os include   # a comment
tcache: core/pages core/base os include
```
"""

# The tree that keeps GOOD_RULE: includes from the root, next to the file,
# through include/, and one system header written with quotes.
GOOD_TREE = {
    "include/ebbmalloc.h": "",
    "os/os.h": '#include "ebbmalloc.h"\n',
    "os/os_linux.c": '#include "os/os.h"\n#include "ck_pr.h"\n',
    "core/base/report.h": '#include "os/os.h"\n',
    "core/base/report.c": '#include "core/base/report.h"\n#include "util.h"\n',
    "core/base/util.h": "",
    "core/pages/span.h": '#include "core/base/util.h"\n',
    "core/pages/page_heap.h": '#include "span.h"\n',
    "core/pages/page_heap.c": '#include "core/pages/page_heap.h"\n  # include "core/base/report.h"\n',
    "tcache/tcache.c": '#include "core/pages/page_heap.h"\n#include "os/os.h"\n',
}


def write_tree(root, files, rule):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    os.makedirs(os.path.join(root, "docs"), exist_ok=True)
    with open(os.path.join(root, "docs", "architecture.md"), "w") as f:
        f.write(rule)


def run(name, files, rule, status, expect=(), reject=()):
    """Runs the checker on a fresh tree; returns a list of failures."""
    with tempfile.TemporaryDirectory(prefix="check_layers_") as root:
        write_tree(root, files, rule)
        p = subprocess.run([sys.executable, CHECKER, "--root", root],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = p.stdout.splitlines()
    errors = []
    if p.returncode != status:
        errors.append("exit status %d, expected %d" % (p.returncode, status))
    for want in expect:
        if want not in lines:
            errors.append("no line '%s'" % want)
    for bad in reject:
        if any(bad in line for line in lines):
            errors.append("a line mentions '%s'" % bad)
    print("%s %s" % ("ok  " if not errors else "FAIL", name))
    for e in errors:
        print("     " + e)
    if errors:
        print("     output:\n       " + "\n       ".join(lines))
    return errors


def main():
    failures = []
    failures += run("a tree that keeps the rule passes", GOOD_TREE, GOOD_RULE, 0,
                    reject=("cycle", "does not allow", "no line"))

    # core/base reaching up into core/pages
    tree = dict(GOOD_TREE)
    tree["core/base/report.c"] += '#include "core/pages/span.h"\n'
    failures += run("a cross-layer include fails", tree, GOOD_RULE, 1, expect=(
        "core/base/report.c:3: includes core/pages/span.h: "
        "rule 'core/base: include os' does not allow core/pages",))

    # the same, written relative to the including file's folder
    tree = dict(GOOD_TREE)
    tree["core/base/util.h"] = '#include "../pages/span.h"\n'
    failures += run("a cross-layer include relative to the file fails", tree, GOOD_RULE, 1,
                    expect=("core/base/util.h:1: includes core/pages/span.h: "
                            "rule 'core/base: include os' does not allow core/pages",))

    # a folder the rule does not name
    tree = dict(GOOD_TREE)
    tree["core/extra/thing.c"] = '#include "os/os.h"\n'
    failures += run("a folder missing from the rule fails", tree, GOOD_RULE, 1,
                    expect=("core/extra/: holds sources but has no line in the `layers` rule",))

    # page_heap.c -> background.h, background.c -> page_heap.h: one folder,
    # so only the module loop is wrong
    tree = dict(GOOD_TREE)
    tree["core/pages/background.h"] = ""
    tree["core/pages/background.c"] = '#include "core/pages/page_heap.h"\n'
    tree["core/pages/page_heap.c"] += '#include "background.h"\n'
    failures += run("a module cycle fails", tree, GOOD_RULE, 1,
                    expect=("module cycle: background -> page_heap -> background",),
                    reject=("does not allow", "folder cycle"))

    # a three-module loop through a header-only module
    tree = dict(GOOD_TREE)
    tree["core/pages/span.h"] = '#include "core/pages/run.h"\n'
    tree["core/pages/run.h"] = '#include "core/pages/page_heap.h"\n'
    failures += run("a longer module cycle fails", tree, GOOD_RULE, 1,
                    expect=("module cycle: page_heap -> span -> run -> page_heap",))

    # folders that include each other: the rule allows it both ways, so
    # only the loop is wrong, in the includes and in the rule
    rule = GOOD_RULE.replace("core/base: os include", "core/base: core/pages os include")
    tree = dict(GOOD_TREE)
    tree["core/base/report.c"] += '#include "core/pages/span.h"\n'
    failures += run("a folder cycle fails", tree, rule, 1,
                    expect=("folder cycle: core/base -> core/pages -> core/base",
                            "rule cycle: the `layers` rule lets core/base -> core/pages -> "
                            "core/base include each other"),
                    reject=("does not allow", "module cycle"))

    # a rule block that is missing, or doubled
    failures += run("no rule block is an error", GOOD_TREE, "# arch\n", 2)
    failures += run("two rule blocks are an error", GOOD_TREE, GOOD_RULE + GOOD_RULE, 2)

    if failures:
        print("check_layers self-test: %d failure(s)" % len(failures))
        return 1
    print("check_layers self-test: all verdicts right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
