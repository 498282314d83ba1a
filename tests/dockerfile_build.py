#!/usr/bin/env python3
"""Replays the Dockerfile's build without a Docker engine, and checks the image's rules.

No Docker engine runs where vismig is developed and tested, so this does what the
engine would do with the parts that matter, and fails loudly when one breaks:

1. Parses the Dockerfile (line continuations, comments, stages).
2. Static rules: multi-stage; the final stage is a small base, installs CA
   certificates, runs as a numeric non-root USER, has an ENTRYPOINT; no ENV, ARG or
   LABEL carries a secret; the build runs `cargo build --release --locked`.
3. The build stage for real: its COPY instructions copy the same files from the
   repository into a fresh directory (so a file the build needs but the Dockerfile
   does not copy fails here), then each RUN runs there with /bin/sh -c, as the engine
   would (CARGO_TARGET_DIR unset; `target` is a link to a cache under the repo's own
   target/ so that a second run is incremental).
4. The runtime stage: every `COPY --from=<build stage>` source exists; the binary is
   stripped, links only libraries that debian:bookworm-slim has, needs no newer glibc
   than bookworm's 2.36, and runs as the Dockerfile's USER (uid 10001): `--version`,
   then `vismig demo` on a small data set in a directory that user owns.

Usage: python3 tests/dockerfile_build.py [--static-only]
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, "Dockerfile")
# What debian:bookworm-slim provides to a dynamically linked binary (libc6, libgcc-s1).
RUNTIME_LIBS = {
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
}
BOOKWORM_GLIBC = (2, 36)
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)


def fail(msg):
    print(f"dockerfile_build: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"dockerfile_build: {msg}", flush=True)


def parse(path):
    """Returns a list of stages: {name, base, instructions: [(KEYWORD, args, line)]}."""
    with open(path) as f:
        lines = f.read().split("\n")
    instructions = []
    buf, start, escape_next = "", 0, False
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not buf:
            start = number
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            escape_next = True
            continue
        buf += raw
        escape_next = False
        keyword, _, args = buf.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip(), start))
        buf = ""
    if escape_next or buf:
        fail(f"{path}: the last instruction ends with a line continuation")
    stages = []
    for keyword, args, line in instructions:
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append({"name": name, "base": words[0], "instructions": [], "line": line})
        elif keyword in ("ARG",) and not stages:
            continue
        else:
            if not stages:
                fail(f"line {line}: {keyword} before the first FROM")
            stages[-1]["instructions"].append((keyword, args, line))
    return stages


def words_of(args):
    args = args.strip()
    if args.startswith("["):
        import json

        return json.loads(args)
    return shlex.split(args)


def static_rules(stages):
    if len(stages) < 2:
        fail("the Dockerfile must be multi-stage (a build stage and a small runtime stage)")
    final = stages[-1]
    build_stages = {s["name"] for s in stages[:-1]}
    if not re.search(r"(-slim|distroless|alpine|scratch)", final["base"]):
        fail(f"the runtime stage's base {final['base']} is not a small image (slim, distroless, alpine)")
    runs = " ".join(a for k, a, _ in final["instructions"] if k == "RUN")
    if "ca-certificates" not in runs and "distroless" not in final["base"]:
        fail("the runtime stage does not install ca-certificates (TLS to the stores needs them)")
    users = [a for k, a, _ in final["instructions"] if k == "USER"]
    if not users:
        fail("the runtime stage has no USER: it would run as root")
    user = users[-1].split(":")[0]
    if not user.isdigit() or int(user) == 0:
        fail(f"USER {users[-1]}: use a numeric non-root uid (Kubernetes' runAsNonRoot can only check a number)")
    if not any(k == "ENTRYPOINT" for k, _, _ in final["instructions"]):
        fail("the runtime stage has no ENTRYPOINT")
    for stage in stages:
        for keyword, args, line in stage["instructions"]:
            if keyword in ("ENV", "ARG", "LABEL") and SECRET_WORDS.search(args):
                fail(f"line {line}: {keyword} {args!r} looks like a secret baked into the image")
            if keyword == "COPY" and re.search(r"\.(pem|key|p12|env)\b|secret", args, re.I):
                fail(f"line {line}: COPY {args!r} copies what looks like a secret into the image")
    build_runs = " ".join(a for s in stages[:-1] for k, a, _ in s["instructions"] if k == "RUN")
    if not re.search(r"cargo build\b[^&;]*--release\b[^&;]*--locked\b|cargo build\b[^&;]*--locked\b[^&;]*--release\b", build_runs):
        fail("the build stage does not run `cargo build --release --locked`")
    copies_from = [words_of(a) for k, a, _ in final["instructions"] if k == "COPY" and "--from=" in a]
    if not copies_from:
        fail("the runtime stage copies nothing from the build stage")
    for words in copies_from:
        source = next(w for w in words if w.startswith("--from="))[len("--from="):]
        if source not in build_stages:
            fail(f"COPY --from={source}: no such build stage ({sorted(build_stages)})")
    say(f"static rules passed: {len(stages)} stages, runtime {final['base']} as USER {users[-1]}")
    return int(user)


def replay_build(stage, root):
    """Runs one build stage's WORKDIR/COPY/ENV/RUN in `root` standing for /."""
    workdir = "/"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_TARGET_DIR") and not k.startswith("CARGO_BUILD_")}
    cache = os.path.join(REPO, "target", "dockerfile-build")
    os.makedirs(cache, exist_ok=True)

    def host(path):
        full = path if path.startswith("/") else os.path.join(workdir, path)
        return os.path.join(root, full.lstrip("/"))

    for keyword, args, line in stage["instructions"]:
        if keyword == "WORKDIR":
            workdir = args if args.startswith("/") else os.path.join(workdir, args)
            os.makedirs(host(workdir), exist_ok=True)
            # The build's own target/ is a link to a cache kept between runs.
            target = os.path.join(host(workdir), "target")
            if not os.path.lexists(target):
                os.symlink(cache, target)
        elif keyword == "ENV":
            words = words_of(args)
            if len(words) == 2 and "=" not in words[0]:
                env[words[0]] = words[1]
            else:
                for w in words:
                    k, _, v = w.partition("=")
                    env[k] = v
        elif keyword == "COPY":
            words = [w for w in words_of(args) if not w.startswith("--")]
            *sources, dest = words
            dest_host = host(dest)
            if dest.endswith("/") or len(sources) > 1:
                os.makedirs(dest_host, exist_ok=True)
            for source in sources:
                src = os.path.join(REPO, source)
                if not os.path.exists(src):
                    fail(f"line {line}: COPY {source}: not in the build context")
                into = os.path.join(dest_host, os.path.basename(source.rstrip("/"))) if os.path.isdir(dest_host) and not os.path.isdir(src) else dest_host
                if os.path.isdir(src):
                    shutil.copytree(src, dest_host, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, into)
        elif keyword == "RUN":
            say(f"line {line}: RUN {args}")
            started = time.time()
            rc = subprocess.call(["nice", "-n", "19", "/bin/sh", "-c", args], cwd=host(workdir), env=env)
            if rc != 0:
                fail(f"line {line}: RUN {args!r} exited {rc}")
            say(f"line {line}: done in {time.time() - started:.0f}s")
        elif keyword in ("ARG", "LABEL", "EXPOSE", "USER", "ENTRYPOINT", "CMD", "SHELL", "HEALTHCHECK"):
            continue
        else:
            fail(f"line {line}: {keyword} is not replayed by this script; teach it")
    return host


def check_binary(path):
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            fail(f"{path} is not an ELF binary")
    sections = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True).stdout
    if ".symtab" in sections:
        fail(f"{path} is not stripped")
    dynamic = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\).*\[(.+?)\]", dynamic))
    extra = needed - RUNTIME_LIBS
    if extra:
        fail(f"{path} links {sorted(extra)}, which debian:bookworm-slim does not have")
    versions = subprocess.run(["readelf", "-V", "-W", path], capture_output=True, text=True, check=True).stdout
    glibc = [tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", versions)]
    newest = max(glibc) if glibc else (0,)
    if newest[:2] > BOOKWORM_GLIBC:
        fail(f"{path} needs glibc {'.'.join(map(str, newest))}, bookworm has 2.36")
    size = os.path.getsize(path) / 1e6
    say(f"binary: {size:.1f} MB, stripped, needs {sorted(needed)}, glibc <= {'.'.join(map(str, newest))}")


def run_as(uid, argv, cwd):
    if os.geteuid() == 0:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] + argv
    else:
        say(f"not root: running {argv[0]} as the current user, not uid {uid}")
    env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "RUST_LOG": "warn"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)


def main():
    stages = parse(DOCKERFILE)
    uid = static_rules(stages)
    if "--static-only" in sys.argv:
        return
    final = stages[-1]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="vismig-dockerfile-") as tmp:
        hosts = {}
        for stage in stages[:-1]:
            root = os.path.join(tmp, stage["name"])
            os.makedirs(root)
            hosts[stage["name"]] = replay_build(stage, root)
        binary = None
        for keyword, args, line in final["instructions"]:
            if keyword == "COPY" and "--from=" in args:
                words = words_of(args)
                stage = next(w for w in words if w.startswith("--from="))[len("--from="):]
                *sources, dest = [w for w in words if not w.startswith("--")]
                for source in sources:
                    path = hosts[stage](source)
                    if not os.path.exists(path):
                        fail(f"line {line}: COPY --from={stage} {source}: the build did not produce it")
                    if dest.endswith("vismig"):
                        binary = path
        if binary is None:
            fail("no COPY --from puts the vismig binary into the runtime image")
        check_binary(binary)
        # The runtime: a copy of the binary run as the image's user, in a directory it owns.
        run_dir = os.path.join(tmp, "runtime")
        os.makedirs(run_dir)
        exe = os.path.join(run_dir, "vismig")
        shutil.copy2(binary, exe)
        os.chmod(tmp, 0o755)
        os.chmod(run_dir, 0o755)
        if os.geteuid() == 0:
            os.chown(run_dir, uid, uid)
        out = run_as(uid, [exe, "--version"], run_dir)
        if out.returncode != 0 or not out.stdout.startswith("vismig "):
            fail(f"vismig --version as uid {uid}: exit {out.returncode}: {out.stdout}{out.stderr}")
        say(f"as uid {uid}: {out.stdout.strip()}")
        out = run_as(uid, [exe, "demo", "--records", "300", "--dir", os.path.join(run_dir, "demo")], run_dir)
        if out.returncode != 0 or "equal" not in out.stdout:
            fail(f"vismig demo as uid {uid}: exit {out.returncode}: {out.stdout}{out.stderr}")
        say(f"as uid {uid}: vismig demo --records 300 passed (seed, backfill, verify equal)")
    say(f"passed in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
