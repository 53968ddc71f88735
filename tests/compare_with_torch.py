"""Does ckptviewer list the same tensors torch finds, with the same values? One line per file.

    python tests/compare_with_torch.py FILE_OR_FOLDER... [--trusted] [--json OUT]

For each file, ckptviewer's reader lists every tensor with its key path, dtype, shape and the sha256 of
its values (the conformance contract), and torch loads the same file its own way:

* ``.safetensors``: ``safetensors.torch.load_file``;
* torch.save files (zip, legacy, tar): ``torch.load(weights_only=True, map_location="cpu")``;
* ``.pt2`` archives made by torch.export: ``torch.export.load`` (its ``state_dict`` and ``constants``),
  **only with --trusted**: torch.export.load unpickles parts of the archive with ``weights_only=False``;
* with --trusted, a torch.save file that ``weights_only=True`` refuses (old pickle protocols, Python 2
  strings, jagged nested tensors) is loaded with ``weights_only=False``: only for files you made.

Without --trusted, a file torch refuses with weights_only=True (a pickled module, a TorchScript archive) has
no safe reference and is reported as such, never loaded another way. TorchScript archives and
AOTInductor packages are never loaded (torch would run their code). Keys are compared as lists (a pickled
dict's keys, list positions); values as sha256 of the C-contiguous little-endian bytes (sparse tensors densified, quantized
tensors by ``int_repr()``, nested tensors as their components' values one after another).

Exit status 0 when every file with a reference matches.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SUFFIXES = {".pt", ".pth", ".bin", ".tar", ".ckpt", ".safetensors", ".pt2", ".pkl", ".model", ".pts", ".jit", ".ptl"}


def torch_sha256(t) -> tuple[str, str, list[int]]:
    """(dtype name, shape, sha256) of a torch tensor's values as the contract defines them."""
    import torch
    name = str(t.dtype).removeprefix("torch.")
    shape = list(t.shape) if not t.is_nested else []
    if t.layout != torch.strided and not t.is_nested:
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    if t.is_nested:
        parts = [c.contiguous().reshape(-1) for c in t.unbind()]
        t = torch.cat(parts) if parts else torch.empty(0, dtype=t.dtype)
    t = t.detach().cpu().contiguous().reshape(-1)
    if t.numel() == 0:
        return name, shape, hashlib.sha256(b"").hexdigest()
    raw = t.view(torch.uint8) if t.dtype.itemsize > 0 else t
    return name, shape, hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def flatten(obj, prefix=()):
    """(key path, tensor) as the contract and ckptviewer key them (a module: its state_dict names, then what
    it holds outside its state_dict under [submodule, "__dict__", ...]); see makers.flatten."""
    import makers
    yield from makers.flatten(obj, prefix)


def torch_reference(path: str, trusted: bool, fmt: str = "") -> tuple[dict | None, str]:
    """{json key: (dtype, shape, sha256)} as torch reads the file, or None and why not."""
    import torch
    warnings.simplefilter("ignore")
    if fmt in ("torchscript", "aotinductor"):
        # torch.load(weights_only=False) hands a TorchScript archive to torch.jit.load, which runs the
        # scripted __setstate__ methods; an AOTInductor package's loader runs its compiled library.
        return None, f"a {fmt} file: torch would run its code to load it, so it has no reference here"
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        obj = load_file(path)
    elif path.endswith(".pt2"):
        if not trusted:
            return None, "a .pt2 archive: torch.export.load unpickles with weights_only=False (use --trusted)"
        try:
            ep = torch.export.load(path)
        except Exception as e:  # noqa: BLE001 - partial archives, AOTInductor packages (never loaded here)
            return None, f"torch.export.load refuses it: {str(e).splitlines()[0][:120]}"
        obj = {"model": {"state_dict": dict(ep.state_dict), "constants": dict(ep.constants)}}
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds
            why = f"torch.load(weights_only=True) refuses it: {str(e).splitlines()[0][:120]}"
            if not trusted:
                return None, why
            try:   # a file you made: latin-1 for Python 2 strings, then torch's full unpickler
                try:
                    obj = torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")
                except Exception:  # noqa: BLE001
                    obj = torch.load(path, map_location="cpu", weights_only=False, encoding="latin1")
            except Exception as e2:  # noqa: BLE001
                return None, f"{why}; weights_only=False too: {str(e2).splitlines()[0][:120]}"
    out = {}
    for key, t in flatten(obj):
        if not isinstance(t, torch.Tensor):
            continue
        try:
            out[json.dumps(key)] = torch_sha256(t)
        except Exception as e:  # noqa: BLE001
            out[json.dumps(key)] = (str(t.dtype).removeprefix("torch."), list(t.shape), f"torch cannot read: {e}")
    return out, ""


def ours(path: str) -> tuple[dict, str]:
    from ckptviewer.core.analyze.info import build_report
    from ckptviewer.core.read.open import open_checkpoint
    with open_checkpoint(path) as ck:
        rep = build_report(ck, checksums=True)
    return {json.dumps(t["key"]): (t["dtype"], t["shape"], t.get("sha256")) for t in rep["tensors"]}, rep["format"]


def compare(path: str, trusted: bool) -> dict:
    try:
        mine, fmt = ours(path)
    except Exception as e:  # noqa: BLE001
        return {"file": path, "status": "ours-failed", "detail": f"{type(e).__name__}: {e}"}
    ref, why = torch_reference(path, trusted, fmt)
    if ref is None:
        return {"file": path, "status": "no-reference", "format": fmt, "tensors": len(mine), "detail": why}
    problems = []
    for k in sorted(ref.keys() - mine.keys()):
        problems.append(f"missing {k}")
    for k in sorted(mine.keys() - ref.keys()):
        if path.endswith(".pt2") and ("sample_inputs" in k or "tensor_subclass_parts" in k):
            continue        # tensors torch.export.load keeps elsewhere (example inputs, a subclass's parts)
        problems.append(f"extra {k}")
    for k in sorted(ref.keys() & mine.keys()):
        a, b = mine[k], ref[k]
        if a[2] is None and str(b[2]).startswith("torch cannot read"):
            continue        # neither can form the values (a tensor subclass): compared by dtype and shape only
        if a[0] != b[0] or (b[1] and list(a[1]) != list(b[1])) or a[2] != b[2]:
            problems.append(f"{k}: ours {a[0]} {a[1]} {str(a[2])[:12]}, torch {b[0]} {b[1]} {str(b[2])[:12]}")
    return {"file": path, "status": "match" if not problems else "differs", "format": fmt, "tensors": len(ref),
            "detail": "; ".join(problems[:6])}


def files_under(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            for dirpath, _dirs, names in os.walk(p):
                out.extend(os.path.join(dirpath, n) for n in sorted(names) if Path(n).suffix in SUFFIXES)
        else:
            out.append(p)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--trusted", action="store_true", help="also run torch.export.load on .pt2 files (made by you)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    results = [compare(f, args.trusted) for f in files_under(args.paths)]
    for r in results:
        print(f"{r['status']:<13} {r.get('format', ''):<14} {r.get('tensors', ''):>5}  {r['file']}"
              + (f"\n              {r['detail']}" if r.get("detail") else ""))
    counts = {s: sum(r["status"] == s for r in results) for s in ("match", "differs", "no-reference", "ours-failed")}
    print("summary: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(results)} files")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if not counts["differs"] and not counts["ours-failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
