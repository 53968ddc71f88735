"""Showing text that came from a file: control characters and bidi overrides made visible, long text elided.

A key like ``"conv1\\u202e.weight"`` would otherwise render reversed, and ``"\\x1b[2J"`` would clear a
terminal. The GUI shows the result as plain text, never as rich text.
"""
from __future__ import annotations

import unicodedata

# Characters that reorder or hide text: bidi embeddings/overrides/isolates, zero-width marks, BOM.
_INVISIBLE = {0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2060,
              0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF, 0x061C}
MAX_SHOWN = 200


def safe_text(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as one line of plain text, with hidden characters escaped and the length capped."""
    text = value if isinstance(value, str) else str(value)
    total = len(text)
    if total > limit:
        text = text[:limit]
    out = []
    for ch in text:
        code = ord(ch)
        if code < 32 or code == 127:
            out.append({9: "\\t", 10: "\\n", 13: "\\r"}.get(code, f"\\x{code:02x}"))
        elif code in _INVISIBLE or (code > 127 and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs")):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    result = "".join(out)
    if total > limit:
        result += f"… ({total:,} characters)"
    return result


def key_text(key: object) -> str:
    """A path component for display: strings as they are (made safe), others with their repr."""
    if isinstance(key, str):
        return safe_text(key)
    return safe_text(repr(key))


def path_text(path) -> str:
    """A key path as ``a / b / 0``."""
    return " / ".join(key_text(k) for k in path) if path else "(root)"
