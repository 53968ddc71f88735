"""``ckptviewer tensor FILE PATH -o OUT``: one tensor's values as .npy or .csv, or a preview on the terminal."""
from __future__ import annotations

import argparse
import sys

from .common import drain, err

HELP = "write one tensor's values as .npy or .csv (-o - prints a preview)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer tensor",
        description="Write one tensor's values to a .npy file (dtype kept where numpy has it; bfloat16, float8 and "
                    "float4 widened to float32) or a .csv file (two dimensions or less, every value in the fewest "
                    "digits that read back exactly). With -o - print a preview instead.",
        epilog="examples:\n"
               "  ckptviewer tensor ckpt.tar model_state_dict/conv1.weight -o conv1.npy\n"
               "  ckptviewer tensor model.safetensors lm_head.weight -o -",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE")
    p.add_argument("path", metavar="PATH", help="the tensor's key path, as convert --select takes it (a/b/0)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a .npy or .csv file, or - for a preview")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return p


def run(argv: list[str]) -> int:
    from ..core.model import keypath
    from ..core.model.tensor import TensorRef
    from ..core.read.open import open_checkpoint
    from ..core.util.errors import CheckpointError, OperationError
    from ..core.util.textsafe import path_text, safe_text
    from ..core.util.units import human_bytes, shape_text

    args = parser().parse_args(argv)
    try:
        with open_checkpoint(args.file) as ckpt:
            exact, value = keypath.resolve(ckpt.root, args.path)
            if not isinstance(value, TensorRef):
                raise OperationError(f"{path_text(exact)} is not a tensor ({type(value).__name__})",
                                     hint="Run `ckptviewer info FILE` to see the tensors' key paths.")
            t = value
            if args.output == "-":
                from ..core.analyze.planes import preview_text, widened_note
                note = widened_note(t)
                print(f"{path_text(exact)}  {shape_text(t.shape)}  {t.dtype.name}  {t.device}"
                      + (f"  ({t.numel:,} values, showing the first and last of each dimension)"
                         if t.numel > 1000 else ""))
                if note:
                    err(note)
                if not t.readable:
                    raise OperationError(f"its values cannot be read: {t.problem}")
                print(preview_text(t))
                return 0
            from ..core.write.values import write_values_steps
            written = drain(write_values_steps(t, args.output, overwrite=args.force),
                            show=sys.stderr.isatty(), label="writing values ")
            for note in written.notes:
                err(note)
            print(f"wrote {safe_text(written.path, 400)}: {written.fmt} {written.dtype} {shape_text(written.shape)}, "
                  f"{human_bytes(written.size)}")
            return 0
    except CheckpointError as e:
        err(str(e))
        return 2
