"""Seeded random filesystem operations on sources, seen (through the watched path) or blind.

A `Source` has a real directory and the path its agent watches (the same directory, or a bindfs
view of it). Visible operations go through the watched path; blind ones go to the real
directory underneath, where the agent's inotify cannot see them. Every operation is logged so a
failing seed can be replayed and read.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ["a", "b", "data_0001.dat", "data_0002.dat", "x y", "été", "日本", "sub", "deep"]
BAD_NAMES = [b"caf\xe9", b"bad\xff\xfename", b"\x80lead"]  # not UTF-8


@dataclass
class Source:
    name: str
    real: Path          # the storage itself
    watched: Path       # what the agent watches (== real, or a bindfs view of it)

    @property
    def has_blind(self) -> bool:
        return self.real != self.watched


GONE_SEC = 3.0  # well past the agents' event latency (batches go out within 1 s)


@dataclass
class OpMix:
    seed: int
    sources: list[Source]
    blind_ratio: float = 0.35
    # A blind `touch -d` into the past only converges when a full audit applies older mtimes
    # (issue 7); False sends backdating through the watched path instead.
    blind_backdate: bool = True
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Listings are refreshed every few operations (a walk per operation made long runs
        # quadratic); a stale pick only skips an operation, the same way for the same seed.
        self._walks: dict[Path, tuple[int, tuple[list[bytes], list[bytes], list[bytes]]]] = {}
        self._steps = 0
        # Paths a seen operation removed, and when. DESIGN §6 rule 4 drops an audit row whose
        # mtime is not newer than the delete's watermark (it cannot tell a re-creation within
        # the event latency from a scan that raced the delete), so a blind re-creation right
        # after a seen removal would never converge: the mix does not make one.
        self._gone: dict[tuple[Path, bytes], float] = {}

    # -------------------------------------------------------------- helpers
    def _root(self, src: Source) -> tuple[Path, str]:
        blind = src.has_blind and self.rng.random() < self.blind_ratio
        return (src.real, "blind") if blind else (src.watched, "seen")

    def _walk(self, root: Path) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """(dirs incl. b'', files, symlinks) as paths relative to root."""
        dirs, files, links = [b""], [], []
        broot = os.fsencode(root)
        for top, dnames, fnames in os.walk(broot):
            rel = os.path.relpath(top, broot)
            rel = b"" if rel == b"." else rel
            for d in dnames:
                p = os.path.join(rel, d) if rel else d
                (links if os.path.islink(os.path.join(top, d)) else dirs).append(p)
            for f in fnames:
                p = os.path.join(rel, f) if rel else f
                (links if os.path.islink(os.path.join(top, f)) else files).append(p)
        return dirs, files, links

    def _name(self) -> bytes:
        if self.rng.random() < 0.1:
            return self.rng.choice(BAD_NAMES) + str(self.rng.randrange(5)).encode()
        return os.fsencode(self.rng.choice(NAMES) + str(self.rng.randrange(6)))

    def _rec(self, src: Source, how: str, what: str, *paths: bytes) -> None:
        shown = " ".join(p.decode("utf-8", "backslashreplace") for p in paths)
        self.log.append(f"{len(self.log):4d} {src.name}/{how}: {what} {shown}")

    def _removed(self, src: Source, how: str, rel: bytes) -> None:
        if how == "seen":
            self._gone[(src.real, rel)] = time.monotonic()

    def _fresh_gone(self, src: Source, how: str, rel: bytes) -> bool:
        """True when a blind operation would re-create `rel` (or something under it) within
        a few seconds of a seen removal of it."""
        if how != "blind":
            return False
        now = time.monotonic()
        for (real, gone), at in list(self._gone.items()):
            if now - at > GONE_SEC:
                del self._gone[(real, gone)]
            elif real == src.real and (rel == gone or rel.startswith(gone + b"/")):
                return True
        return False

    # -------------------------------------------------------------- one operation
    def step(self) -> None:
        src = self.rng.choice(self.sources)
        root, how = self._root(src)
        broot = os.fsencode(root)
        self._steps += 1
        cached = self._walks.get(src.real)
        if cached is None or self._steps - cached[0] >= 8:
            cached = (self._steps, self._walk(src.real))
            self._walks[src.real] = cached
        dirs, files, links = cached[1]
        ops = {"create": 6, "mkdirs": 3, "append": 2, "truncate": 2, "touch_past": 1,
               "touch_future": 1, "cp_p": 2, "delete": 2, "rename_file": 2, "rename_dir": 1,
               "rmtree": 0.3, "dir_to_file": 0.3, "symlink": 1}
        op = self.rng.choices(list(ops), weights=list(ops.values()))[0]
        if op == "touch_past" and how == "blind" and not self.blind_backdate:
            root, how = src.watched, "seen"
            broot = os.fsencode(root)
        P = lambda rel: os.path.join(broot, rel)  # noqa: E731
        d = self.rng.choice(dirs)
        try:
            if op == "create" or (op in ("append", "truncate", "touch_past", "touch_future",
                                         "cp_p", "delete", "rename_file") and not files):
                rel = os.path.join(d, self._name()) if d else self._name()
                if os.path.lexists(P(rel)) or self._fresh_gone(src, how, rel):
                    return
                with open(P(rel), "wb") as f:
                    f.write(os.urandom(self.rng.randrange(0, 5000)))
                self._rec(src, how, "create", rel)
            elif op == "mkdirs":
                rel = os.path.join(*(os.fsencode(self.rng.choice(["p", "q", "r"]) + str(i))
                                     for i in range(self.rng.randrange(1, 4))))
                rel = os.path.join(d, rel) if d else rel
                if self._fresh_gone(src, how, rel):
                    return
                try:
                    subprocess.run([b"mkdir", b"-p", P(rel)], check=True, capture_output=True)
                except subprocess.CalledProcessError:
                    return  # a file is in the way
                for i in range(self.rng.randrange(1, 6)):  # immediate creates inside
                    with open(os.path.join(P(rel), b"f%d" % i), "wb") as f:
                        f.write(b"x" * self.rng.randrange(100))
                self._rec(src, how, "mkdir -p + creates", rel)
            elif op == "append":
                rel = self.rng.choice(files)
                # No O_CREAT: a pick from a listing a few operations old may be gone, and an
                # append must not re-create it.
                fd = os.open(P(rel), os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, b"y" * self.rng.randrange(1, 3000))
                finally:
                    os.close(fd)
                self._rec(src, how, "append", rel)
            elif op == "truncate":
                rel = self.rng.choice(files)
                os.truncate(P(rel), self.rng.randrange(0, 3000))
                self._rec(src, how, "truncate", rel)
            elif op in ("touch_past", "touch_future"):
                rel = self.rng.choice(files)
                delta = self.rng.uniform(3600, 400 * 86400)
                ts = time.time() + (delta if op == "touch_future" else -delta)
                subprocess.run([b"touch", b"-c", b"-d", b"@%.9f" % ts, P(rel)], check=True,
                               capture_output=True)
                self._rec(src, how, f"touch -d {op[6:]}", rel)
            elif op == "cp_p":
                rel = self.rng.choice(files)
                dest = os.path.join(d, self._name()) if d else self._name()
                if os.path.lexists(P(dest)) or self._fresh_gone(src, how, dest):
                    return
                subprocess.run([b"cp", b"-p", P(rel), P(dest)], check=True, capture_output=True)
                self._rec(src, how, "cp -p", rel, dest)
            elif op == "delete":
                rel = self.rng.choice(files + links) if links else self.rng.choice(files)
                os.unlink(P(rel))
                self._removed(src, how, rel)
                self._rec(src, how, "rm", rel)
            elif op == "rename_file":
                rel = self.rng.choice(files + links) if links else self.rng.choice(files)
                dest = os.path.join(d, self._name()) if d else self._name()
                if os.path.isdir(P(dest)) or self._fresh_gone(src, how, dest):
                    return
                os.rename(P(rel), P(dest))
                self._removed(src, how, rel)
                self._rec(src, how, "mv", rel, dest)
            elif op == "rename_dir":
                if len(dirs) < 2:
                    return
                rel = self.rng.choice(dirs[1:])
                dest = os.path.join(d, self._name()) if d else self._name()
                if dest == rel or dest.startswith(rel + b"/") or os.path.lexists(P(dest)) \
                        or self._fresh_gone(src, how, dest):
                    return
                os.rename(P(rel), P(dest))
                self._removed(src, how, rel)
                self._rec(src, how, "mv dir", rel, dest)
            elif op == "rmtree":
                if len(dirs) < 2:
                    return
                rel = self.rng.choice(dirs[1:])
                shutil.rmtree(P(rel))
                self._removed(src, how, rel)
                self._rec(src, how, "rm -r", rel)
            elif op == "dir_to_file":
                if len(dirs) < 2:
                    return
                rel = self.rng.choice(dirs[1:])
                if self._fresh_gone(src, how, rel):
                    return
                shutil.rmtree(P(rel))
                with open(P(rel), "wb") as f:
                    f.write(b"now a file")
                self._rec(src, how, "replace dir by file", rel)
            elif op == "symlink":
                rel = os.path.join(d, self._name()) if d else self._name()
                if os.path.lexists(P(rel)) or self._fresh_gone(src, how, rel):
                    return
                target = self.rng.choice(files) if files and self.rng.random() < 0.7 \
                    else b"../nowhere/" + self._name()
                os.symlink(target, P(rel))
                self._rec(src, how, "ln -s", target, rel)
        except (OSError, subprocess.CalledProcessError):
            return  # a pick from a listing a few operations old may be gone or changed type

    def run(self, n: int, *, pause: float = 0.0) -> None:
        for _ in range(n):
            self.step()
            if pause:
                time.sleep(pause)

    def populate(self, src: Source, *, dirs: int = 5, files: int = 8) -> None:
        """A small deterministic starting tree in the real directory."""
        for i in range(dirs):
            d = src.real / f"dir{i}" / f"sub{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            for j in range(files):
                (d / f"data_{j:04d}.dat").write_bytes(b"z" * ((i * 131 + j * 17) % 997))
        (src.real / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"latin-1 name")
        os.symlink("dir0/sub0/data_0000.dat", src.real / "link0")
