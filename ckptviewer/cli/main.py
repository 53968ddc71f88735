"""The command line: ``ckptviewer [FILE...]`` opens the window; ``ckptviewer COMMAND ...`` works headless.

One module per command (``info``, ``convert``, ``diff``, ``scan``, ``doctor``, ``trend``, ``merge``), each with
``HELP`` and ``run(argv)``.
Headless commands import neither Qt nor torch unless they need them (writing a torch file does).
"""
from __future__ import annotations

import argparse
import difflib
import gc
import os
import sys

from .. import __version__
from . import cache, convert, diff, doctor, health, info, merge, scan, tensor, trend, warmstart
from .common import err, terminal_task

COMMANDS = {"info": info, "scan": scan, "diff": diff, "convert": convert, "doctor": doctor, "warmstart": warmstart,
            "cache": cache, "tensor": tensor, "health": health, "trend": trend, "merge": merge}


def _gui_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {module.HELP}" for name, module in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="ckptviewer",
        description="Browse PyTorch checkpoints safely: nothing in a file is ever executed.",
        epilog=f"commands (run 'ckptviewer COMMAND --help'):\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="checkpoints to open, one tab each: paths or URLs (https://, hf://ORG/REPO/FILE, s3://, gs://)")
    p.add_argument("--demo", action="store_true", help="open a demo checkpoint generated on the fly")
    p.add_argument("--new-window", action="store_true", help="do not hand files to a running window")
    p.add_argument("--screenshot", metavar="OUT.png", help="render the window to a PNG once loaded, then exit")
    p.add_argument("--select", metavar="PATH", help="select this entry (e.g. model_state_dict/conv1.weight) and "
                                                    "show its values")
    p.add_argument("--install-desktop", action="store_true", help="register the .desktop entry and MIME types")
    p.add_argument("--uninstall-desktop", action="store_true", help="remove what --install-desktop added")
    p.add_argument("--version", action="version", version=f"ckptviewer {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        command = COMMANDS[argv[0]]
        # A headless command is one short pass over data that has almost no reference cycles; the
        # cyclic collector would rescan millions of live objects (it tripled `info` on 100k keys).
        gc.disable()
        try:
            with terminal_task():
                return command.run(argv[1:])
        except KeyboardInterrupt:
            err("interrupted")
            return 130
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    unknown = unknown_command(argv)
    if unknown:
        err(unknown)
        return 2
    args = _gui_parser().parse_args(argv)
    if args.install_desktop or args.uninstall_desktop:
        from ..desktop import install, uninstall
        return (install if args.install_desktop else uninstall)(print)
    problem = _prepare_display(bool(args.screenshot))
    if problem:
        err(problem)
        return 2
    from ..gui.shell.app import run
    return run(args)


def unknown_command(argv: list[str]) -> str | None:
    """Why the first word is neither a command nor a file to open (None when it is one or the other): a
    mistyped command (``warmstrat``) must not open the window on files that do not exist."""
    if not argv or argv[0].startswith("-") or argv[0] in COMMANDS or os.path.exists(argv[0]):
        return None
    word = argv[0]
    close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.6)
    if close:
        return f"unknown command {word!r} (did you mean {close[0]}?). Run 'ckptviewer --help' for the commands."
    if not any(ch in word for ch in "./\\"):
        return (f"unknown command {word!r}, and no file of that name. The commands are {', '.join(COMMANDS)}; "
                f"run 'ckptviewer --help'.")
    return None


def _prepare_display(screenshot: bool, env=os.environ, platform: str = sys.platform) -> str | None:
    """Make sure Qt will have somewhere to draw, before Qt is imported. On Linux without a display (an
    SSH session, a container, CI): a screenshot renders offscreen, which needs none; opening a window
    says why it cannot instead of letting Qt abort the interpreter. Returns the reason, or None."""
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    if screenshot:
        env["QT_QPA_PLATFORM"] = "offscreen"
        return None
    return ("no display to open a window on (DISPLAY and WAYLAND_DISPLAY are not set). Run it in a desktop "
            "session, use the commands that need none (ckptviewer info / scan / diff / convert / trend / merge), or "
            "render the window to a file with --screenshot OUT.png")


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
