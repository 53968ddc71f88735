"""Messages as a user reads them: unknown commands, and errors that read as sentences."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ckptviewer.cli.main import unknown_command
from ckptviewer.core.util.errors import CheckpointError, TruncatedFileError, join_sentences

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("word,expected", [("warmstrat", "did you mean warmstart?"), ("inof", "did you mean info?"),
                                           ("convrt", "did you mean convert?")])
def test_a_mistyped_command_is_named_not_opened(tmp_path, word, expected):
    out = run(word, tmp_path / "a.pt", tmp_path / "b.pt")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"ckptviewer: unknown command '{word}' ({expected}). Run 'ckptviewer --help' for the " \
                         f"commands.\n"


def test_unknown_words_and_real_paths(tmp_path):
    assert "no file of that name" in unknown_command(["frobnicate"])
    assert unknown_command(["warmstart", "a", "b"]) is None
    assert unknown_command(["--demo"]) is None
    real = tmp_path / "warmstrat"          # an existing path is a file to open, whatever its name
    real.write_bytes(b"x")
    assert unknown_command([str(real)]) is None
    assert unknown_command(["missing/model.pt"]) is None      # a path: the window says it is missing


def test_errors_read_as_sentences(tmp_path):
    assert str(CheckpointError("no such file", path="/x/a.pt", hint="Check the path.")) == \
        "a.pt: no such file. Check the path."
    assert str(TruncatedFileError("the zip archive has no end record (the file was cut short)")) == \
        "the zip archive has no end record (the file was cut short). The file is incomplete; download or copy it again."
    assert join_sentences("done.", "then this") == "done. Then this"
    assert join_sentences("a; b", "") == "a; b"
    out = run("info", tmp_path / "nope.pt")
    assert out.returncode == 1 and out.stderr == "ckptviewer: nope.pt: no such file. Check the path.\n"
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    out = run("info", empty)
    assert "the file is empty. It may still be downloading" in out.stderr
