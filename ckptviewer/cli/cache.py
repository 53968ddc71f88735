"""``ckptviewer cache``: where remote files' bytes are cached, how much the cache holds, and clearing it."""
from __future__ import annotations

import argparse

HELP = "show or clear the cache of remote files' bytes (URLs, hf://, s3://)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer cache",
        description="Remote checkpoints (https://, hf://, s3://, gs://) are read by range; the bytes read are kept "
                    "in a bounded cache (1 MiB blocks, least recently used first out) so reopening is instant and "
                    "works offline for what was read. Its folder is $CKPTVIEWER_CACHE_DIR, else the user cache "
                    "folder; its size cap is $CKPTVIEWER_CACHE_MAX (default 4G).")
    p.add_argument("--clear", action="store_true", help="delete everything in the cache")
    return p


def run(argv: list[str]) -> int:
    from ..core.source.cache import shared_cache
    from ..core.util.units import human_bytes

    args = parser().parse_args(argv)
    cache = shared_cache()
    if args.clear:
        freed = cache.clear()
        print(f"cleared {cache.root} ({human_bytes(freed)} freed)")
        return 0
    used, files = cache.usage()
    print(f"cache     {cache.root}")
    print(f"holds     {human_bytes(used)} in {files:,} file{'s' if files != 1 else ''} "
          f"(cap {human_bytes(cache.cap)}; set CKPTVIEWER_CACHE_MAX to change it)")
    print("clear it  ckptviewer cache --clear")
    return 0
