"""Deterministic bench tree: `upload/submit/{c1}/{c2}/{uuid}/sub_N/data_NNNN.dat`.

`generate(root, entries)` builds about `entries` entries (files + directories), the same ones
for the same (entries, seed): uuids, sizes (sparse files) and mtimes come from a seeded RNG.
Two extra upload directories hold one 1,000-entry and one 10,000-entry `sub_0`, which the bench
lists. A finished tree is recorded in `<root>.done` and reused by the next run.

    python bench/gen_tree.py ROOT [--entries 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

C1 = [f"{i:02x}" for i in range(16)]
C2 = [f"{i:02x}" for i in range(16)]
SUBS = 4                 # sub_N directories per upload
FILES = 24               # data files per sub directory
PER_UPLOAD = 1 + SUBS * (1 + FILES)
WIDE = (1000, 10000)     # entries in the two wide sub_0 directories
BASE_MTIME = 1_700_000_000
FORMAT = 1


@dataclass(frozen=True)
class TreeInfo:
    root: str
    entries: int          # below the root (what a pipe holds), root excluded
    files: int
    dirs: int
    wide: dict[str, str]  # "1000" / "10000" -> view path of the wide directory
    sample: list[str]     # some file view paths, for metadata queries


def _params(entries: int, seed: int) -> dict[str, int]:
    return {"entries": entries, "seed": seed, "format": FORMAT}


def generate(root: str | Path, entries: int = 100_000, *, seed: int = 1,
             quiet: bool = False) -> TreeInfo:
    root = Path(root)
    done = root.with_name(root.name + ".done")
    if done.exists() and root.is_dir():
        saved = json.loads(done.read_text())
        if saved.get("params") == _params(entries, seed):
            return TreeInfo(**saved["info"])
    if root.exists():
        shutil.rmtree(root)
    done.unlink(missing_ok=True)
    t0 = time.monotonic()
    rng = random.Random(seed)
    root.mkdir(parents=True)
    files = dirs = 0
    sample: list[str] = []
    wide: dict[str, str] = {}

    def mkdir(rel: str) -> None:
        nonlocal dirs
        os.mkdir(root / rel)
        dirs += 1

    def mkfile(rel: str) -> None:
        nonlocal files
        fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, rng.randrange(0, 1 << 16))
            t = BASE_MTIME + rng.randrange(0, 3 * 10**7) + rng.randrange(10**9) / 1e9
            os.utime(fd, (t, t))
        finally:
            os.close(fd)
        files += 1
        if rng.random() < 0.01 and len(sample) < 2000:
            sample.append("/" + rel)

    mkdir("upload")
    mkdir("upload/submit")
    made: set[str] = set()
    budget = entries - 2 - sum(WIDE) - 2 * (1 + 1 + 2)
    uploads = max(1, budget // (PER_UPLOAD + 0))
    plan = [(w, None) for w in WIDE] + [(None, i) for i in range(uploads)]
    for n, (width, i) in enumerate(plan):
        c1, c2 = C1[n % len(C1)], C2[(n // len(C1)) % len(C2)]
        for part in (f"upload/submit/{c1}", f"upload/submit/{c1}/{c2}"):
            if part not in made:
                mkdir(part)
                made.add(part)
        u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        up = f"upload/submit/{c1}/{c2}/{u}"
        mkdir(up)
        if width is not None:
            mkdir(f"{up}/sub_0")
            wide[str(width)] = f"/{up}/sub_0"
            for k in range(width - 0):
                mkfile(f"{up}/sub_0/data_{k:04d}.dat")
            continue
        for s in range(SUBS):
            mkdir(f"{up}/sub_{s}")
            for k in range(FILES):
                mkfile(f"{up}/sub_{s}/data_{k:04d}.dat")
        if not quiet and i % 2000 == 0 and i:
            print(f"  gen: {files + dirs} entries, {time.monotonic() - t0:.0f}s", file=sys.stderr)
    info = TreeInfo(str(root), files + dirs, files, dirs, wide, sample)
    done.write_text(json.dumps({"params": _params(entries, seed), "info": info.__dict__}))
    if not quiet:
        print(f"  gen: {info.entries} entries in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    info = generate(args.root, args.entries, seed=args.seed)
    print(json.dumps({k: v for k, v in info.__dict__.items() if k != "sample"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
