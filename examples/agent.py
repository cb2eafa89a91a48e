#!/usr/bin/env python3
"""A small demo "agent": it tries allowed and forbidden actions and prints each outcome.

Run it confined with `cargo xtask demo` (policies/demo.yaml). Every line says
what was tried and what the kernel answered.
"""
import errno
import os
import subprocess
import sys

WORKSPACE = os.environ.get("AGENT_WORKSPACE", os.getcwd())
results = []


def attempt(what, fn, expect_allowed):
    try:
        detail = fn()
        outcome = "allowed"
    except OSError as e:
        detail = f"{errno.errorcode.get(e.errno, e.errno)} ({e.strerror})"
        outcome = "denied"
    ok = (outcome == "allowed") == expect_allowed
    results.append(ok)
    mark = "ok " if ok else "!! "
    print(f"{mark} {outcome:8} {what}: {detail or ''}".rstrip(": "), flush=True)


def write_workspace():
    path = os.path.join(WORKSPACE, "notes.txt")
    with open(path, "w") as f:
        f.write("the agent was here\n")
    return path


def read_file(path):
    with open(path) as f:
        return f"{len(f.read())} bytes"


def write_file(path):
    with open(path, "w") as f:
        f.write("x")


def run(argv):
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return f"exit {out.returncode}: {out.stdout.strip()[:60]}"


print(f"demo agent pid {os.getpid()}, workspace {WORKSPACE}", flush=True)
attempt("write a note in the workspace", write_workspace, True)
attempt("read it back with /usr/bin/cat", lambda: run(["/usr/bin/cat", os.path.join(WORKSPACE, "notes.txt")]), True)
attempt("read /etc/shadow", lambda: read_file("/etc/shadow"), False)
attempt("read /etc/hostname", lambda: read_file("/etc/hostname"), False)
attempt("write /etc/agentd-demo", lambda: write_file("/etc/agentd-demo"), False)
attempt("run /usr/bin/id", lambda: run(["/usr/bin/id"]), False)
attempt("run a shell: /usr/bin/sh -c id", lambda: run(["/usr/bin/sh", "-c", "id"]), False)

failed = results.count(False)
print(f"\n{len(results) - failed} of {len(results)} outcomes as the policy says", flush=True)
sys.exit(1 if failed else 0)
