"""The realistic mix of `cargo xtask bench`: what a coding agent does between model calls.

Usage: mix.py SRC OUT PASSES

Each pass walks the source tree SRC (a git repository), reads every file, writes a
summary of it (lines, words, SHA-256) under OUT and an index of them all, then runs
`git status` in SRC. Prints `ns N` (wall clock from the first pass to the end, so the
interpreter's start-up is not in it) and `cpu_ns N` (user + system time of this process
and the git processes it ran), like agentd-benchprog.
"""

import hashlib
import os
import resource
import subprocess
import sys
import time


def cpu_ns():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime) * 1e9)


def summarize(src, out):
    index = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                data = f.read()
            rel = os.path.relpath(path, src)
            lines, words = data.count(b"\n"), len(data.split())
            line = f"{rel} {lines} {words} {hashlib.sha256(data).hexdigest()}\n"
            dest = os.path.join(out, rel + ".summary")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w") as f:
                f.write(line)
            index.append(line)
    with open(os.path.join(out, "index.txt"), "w") as f:
        f.writelines(index)
    return len(index)


def main():
    src, out, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # git reads no configuration of the invoking user: the tools differ in what of
    # $HOME they let through, and the workload must be the same under each.
    env = {"PATH": "/usr/bin", "HOME": out, "GIT_CONFIG_NOSYSTEM": "1", "GIT_OPTIONAL_LOCKS": "0"}
    cpu0, t0 = cpu_ns(), time.perf_counter_ns()
    for _ in range(passes):
        if summarize(src, out) == 0:
            sys.exit(f"mix: no files under {src}")
        subprocess.run(["/usr/bin/git", "status", "--porcelain"], cwd=src, env=env,
                       check=True, stdout=subprocess.DEVNULL)
    print(f"ns {time.perf_counter_ns() - t0}")
    print(f"cpu_ns {cpu_ns() - cpu0}")


if __name__ == "__main__":
    main()
