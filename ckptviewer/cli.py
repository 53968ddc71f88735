"""The command line: ``ckptviewer [FILE...]`` opens the window; ``ckptviewer COMMAND ...`` works headless.

Headless commands import neither Qt nor torch unless they need them (writing a torch file does).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys

from . import __version__

COMMANDS = {}


def command(name: str, help_text: str):
    def register(fn):
        COMMANDS[name] = (fn, help_text)
        return fn
    return register


def _err(msg: str) -> None:
    print(f"ckptviewer: {msg}", file=sys.stderr)


def _single_line(text: str) -> str:
    return " ".join(str(text).split())


# -- info ---------------------------------------------------------------------------------------------
def _info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ckptviewer info",
                                description="Show what a checkpoint holds without loading its tensors.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file (a list for several files)")
    p.add_argument("--checksums", action="store_true", help="add each tensor's sha256 (reads every tensor)")
    p.add_argument("--depth", type=int, default=None, metavar="N", help="fold the tree below N levels")
    return p


@command("info", "show a checkpoint's tree, tensors and summary")
def cmd_info(argv: list[str]) -> int:
    import json

    from .core.errors import CheckpointError
    from .core.formats import open_checkpoint
    from .core.info import build_report, report_text

    args = _info_parser().parse_args(argv)
    status = 0
    reports = []
    for i, path in enumerate(args.files):
        try:
            with open_checkpoint(path) as ckpt:
                if args.json:
                    reports.append(build_report(ckpt, checksums=args.checksums))
                else:
                    if i:
                        print()
                    print(report_text(ckpt, depth=args.depth))
        except CheckpointError as e:
            _err(_single_line(str(e)))
            status = 1
        except Exception as e:  # a reader bug: say so in one line, keep going with the other files
            _err(_single_line(f"{os.path.basename(path)}: internal error ({type(e).__name__}: {e}); "
                              f"please report this file's problem"))
            status = 2
    if args.json and reports:
        out = reports[0] if len(args.files) == 1 else reports
        # dumps (one shot, the C encoder) is several times faster than dump's incremental writes.
        sys.stdout.write(json.dumps(out, default=repr) + "\n")
    return status


# -- the window ---------------------------------------------------------------------------------------
def _gui_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="ckptviewer",
        description="Browse PyTorch checkpoints safely: nothing in a file is ever executed.",
        epilog=f"commands (run 'ckptviewer COMMAND --help'):\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", metavar="FILE", help="checkpoints to open, one tab each")
    p.add_argument("--demo", action="store_true", help="open a demo checkpoint generated on the fly")
    p.add_argument("--new-window", action="store_true", help="do not hand files to a running window")
    p.add_argument("--screenshot", metavar="OUT.png", help="render the window to a PNG once loaded, then exit")
    p.add_argument("--install-desktop", action="store_true", help="register the .desktop entry and MIME types")
    p.add_argument("--uninstall-desktop", action="store_true", help="remove what --install-desktop added")
    p.add_argument("--version", action="version", version=f"ckptviewer {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        fn, _ = COMMANDS[argv[0]]
        # A headless command is one short pass over data that has almost no reference cycles; the
        # cyclic collector would rescan millions of live objects (it tripled `info` on 100k keys).
        gc.disable()
        try:
            return fn(argv[1:])
        except KeyboardInterrupt:
            _err("interrupted")
            return 130
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    args = _gui_parser().parse_args(argv)
    if args.install_desktop or args.uninstall_desktop:
        from .desktop import install, uninstall
        return (install if args.install_desktop else uninstall)(print)
    from .gui.app import run
    return run(args)


def entry() -> None:
    """The console script. After a headless command, exit without tearing down every object the
    command built (freeing a 100,000-tensor tree one object at a time costs a tenth of its run)."""
    argv = sys.argv[1:]
    rc = main(argv)
    if argv and argv[0] in COMMANDS:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    entry()
