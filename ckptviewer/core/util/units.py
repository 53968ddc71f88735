"""Human-readable numbers for sizes and counts."""
from __future__ import annotations


def human_bytes(n: int | float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def human_count(n: int) -> str:
    return f"{n:,}"


def shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def counted(n: int, word: str, many: str | None = None) -> str:
    """``"1 tensor"``, ``"21 tensors"``, ``"1,024 parameters"``: a count with its noun."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
