"""Bench building blocks: figures with targets and baselines, timing helpers, machine details,
and the table printed on stdout."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    part: str                      # Fusion / Agent / Mount
    name: str
    value: float | None
    unit: str
    target: str = ""               # e.g. ">= 100000", "<= 0.005", "<= 2x baseline"
    baseline: float | None = None
    baseline_label: str = ""
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.value is None or not self.target:
            return None
        op, _, rest = self.target.partition(" ")
        if rest.endswith("x baseline"):
            if self.baseline is None:
                return None
            limit = float(rest.split("x")[0]) * self.baseline
        else:
            limit = float(rest)
        return self.value >= limit if op == ">=" else self.value <= limit

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeat(fn: Callable[[], object], n: int) -> list[float]:
    return [timed(fn) for _ in range(n)]


def run_quiet(argv: list[str], timeout: float = 900.0) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   timeout=timeout)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": platform.node(), "kernel": platform.release(), "arch": platform.machine(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        pass
    return info


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "s" and v < 1:
        return f"{v * 1000:.2f} ms" if v >= 0.001 else f"{v * 1e6:.1f} µs"
    if abs(v) >= 1000:
        return f"{v:,.0f} {unit}"
    return f"{v:.3g} {unit}"


def fmt_target(f: Figure) -> str:
    if not f.target:
        return ""
    op, _, rest = f.target.partition(" ")
    sym = {">=": "≥", "<=": "≤"}[op]
    if rest.endswith("x baseline"):
        return f"{sym} {rest}"
    return f"{sym} {fmt(float(rest), f.unit)}"


def table(figures: list[Figure]) -> str:
    rows = [("part", "figure", "value", "baseline (same run)", "target", "")]
    for f in figures:
        base = f"{fmt(f.baseline, f.unit)} {f.baseline_label}".strip() if f.baseline is not None \
            else (f.baseline_label or "")
        mark = {True: "PASS", False: "FAIL", None: ""}[f.ok]
        rows.append((f.part, f.name, fmt(f.value, f.unit), base, fmt_target(f), mark))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {f.part} / {f.name}: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)
