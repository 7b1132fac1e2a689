"""How much of a forked child's memory its parent's pages cost it: each resident page of the child's heap
(its anonymous mappings and [heap]) is shared (the same physical frame as the parent's page at that address),
copied (the parent holds that page too, in another frame: copied on write), or new (the parent has none there).

    python -m bench.cow PARENT_PID CHILD_PID

Reads /proc/<pid>/maps and /proc/<pid>/pagemap; frame numbers need root (CAP_SYS_ADMIN), else None.
bench.fleet_memory reports it for each child of the zygote.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["PageOrigins", "page_origins"]

_PAGE = 4096
_PRESENT = 1 << 63
_FRAME = (1 << 55) - 1
_MIB = 2**20


@dataclass(frozen=True)
class PageOrigins:
    shared_mib: float
    copied_mib: float
    new_mib: float


def _heap_ranges(pid: int) -> list[tuple[int, int]]:
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            if name in ("", "[heap]"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end))
    return found


def _entries(pagemap: BinaryIO, start: int, end: int) -> tuple[int, ...]:
    pagemap.seek(start // _PAGE * 8)
    data = pagemap.read((end - start) // _PAGE * 8)
    return struct.unpack(f"{len(data) // 8}Q", data)


def page_origins(parent: int, child: int) -> PageOrigins | None:
    """Where the child's resident heap pages come from; None if frame numbers cannot be read here."""
    counts = {"shared": 0, "copied": 0, "new": 0}
    parent_ranges = _heap_ranges(parent)
    with open(f"/proc/{parent}/pagemap", "rb") as theirs, open(f"/proc/{child}/pagemap", "rb") as ours:
        for start, end in _heap_ranges(child):
            frames: dict[int, int] = {}
            for p_start, p_end in parent_ranges:
                lo, hi = max(start, p_start), min(end, p_end)
                if lo < hi:
                    for i, entry in enumerate(_entries(theirs, lo, hi)):
                        if entry & _PRESENT:
                            frames[lo + i * _PAGE] = entry & _FRAME
            for i, entry in enumerate(_entries(ours, start, end)):
                if not entry & _PRESENT:
                    continue
                frame, address = entry & _FRAME, start + i * _PAGE
                if frame == 0:
                    return None  # frame numbers hidden: not root
                if address not in frames:
                    counts["new"] += 1
                else:
                    counts["shared" if frames[address] == frame else "copied"] += 1
    return PageOrigins(*(counts[k] * _PAGE / _MIB for k in ("shared", "copied", "new")))


if __name__ == "__main__":
    print(page_origins(int(sys.argv[1]), int(sys.argv[2])))
