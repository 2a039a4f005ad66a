#!/usr/bin/env python3
"""Keeps a shared cargo target directory from growing without bound: every fresh clone
builds the workspace crates under new hashes, so old artifacts pile up. Keeps the two newest
builds of each library in <target>/<profile>/deps (a dependency may legitimately be built
twice, with two feature sets) and the newest build of each test executable, and deletes
the rest. There are some 25 test executables of about 100 MB each, and a run links them
again anyway: a second set would only take room."""
import collections
import os
import re
import sys

deps = os.path.join(sys.argv[1], "deps")
if not os.path.isdir(deps):
    sys.exit(0)
builds = collections.defaultdict(lambda: collections.defaultdict(list))
for name in os.listdir(deps):
    m = re.match(r"^(.*)-([0-9a-f]{16})(\..*)?$", name)
    path = os.path.join(deps, name)
    if m and os.path.isfile(path):
        builds[m.group(1)][m.group(2)].append(path)
freed = 0
def is_executable(paths):
    return any(os.path.splitext(p)[1] == "" and os.access(p, os.X_OK) for p in paths)


for artifact, by_hash in builds.items():
    newest_first = sorted(by_hash.values(), key=lambda ps: -max(os.path.getmtime(p) for p in ps))
    keep = 1 if is_executable(newest_first[0]) else 2
    for paths in newest_first[keep:]:
        for p in paths:
            freed += os.path.getsize(p)
            os.remove(p)
print(f"pruned {freed / 1e9:.1f} GB of old build artifacts from {deps}")
