"""``ckptviewer doctor`` and ``convert --weights-only-safe``, checked against what the installed torch does.

Files are made by torch at test time. For each one: the doctor's verdict is compared with ``torch.load(FILE)``
run with its default arguments in a fresh process; every snippet the doctor prints is run in its own process
and must load its file; every converted copy must load with the defaults (in a fresh process) and hold the
same tensors (bytes) and values.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import hostile
import numpy as np
import pytest
import torch
from makers import recorded_location

from ckptviewer.core.analyze.doctor import diagnose, probe_machine, target_for

USERPKG = "ckd_userpkg"
USERPKG_SOURCE = textwrap.dedent("""
    import dataclasses, enum, typing
    import torch.nn as nn

    @dataclasses.dataclass
    class Cfg:
        lr: float = 0.1
        layers: tuple = (1, 2)

    class Slotted:
        __slots__ = ("x", "y")
        def __init__(self):
            self.x, self.y = 1, 2

    class Color(enum.Enum):
        RED = 1

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.act = nn.ReLU()
""")


def _env(folder) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    return env


class Files(dict):
    """name -> path; ``expected[name]``: what a weights-only-safe copy should hold."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder
        self.expected = {}


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Files:
    folder = tmp_path_factory.mktemp("doctor")
    (folder / f"{USERPKG}.py").write_text(USERPKG_SOURCE)
    sys.path.insert(0, str(folder))
    try:
        import importlib
        pkg = importlib.import_module(USERPKG)
    finally:
        sys.path.remove(str(folder))
    out = Files(folder)
    torch.manual_seed(0)

    def save(name, obj, expected=None, **kw):
        path = folder / name
        torch.save(obj, path, **kw)
        out[name] = path
        out.expected[name] = expected
        return path

    w = torch.randn(3)
    save("plain.pt", {"w": w, "epoch": 3, "s": {1, 2}, "c": 1 + 2j})
    save("namespace.pt", {"args": argparse.Namespace(lr=0.1, name="x"), "w": w},
         {"args": {"lr": 0.1, "name": "x"}, "w": w})
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    save("numpy.pt", {"acc": np.float64(0.5), "step": np.int64(3), "flag": np.bool_(True), "arr": arr,
                      "ids": np.arange(4)},
         {"acc": 0.5, "step": 3, "flag": True, "arr": torch.from_numpy(arr), "ids": torch.arange(4)})
    save("dataclass.pt", {"cfg": pkg.Cfg()}, {"cfg": {"lr": 0.1, "layers": (1, 2)}})
    save("slots.pt", {"s": pkg.Slotted()}, {"s": {"x": 1, "y": 2}})
    save("enum.pt", {"c": pkg.Color.RED}, {"c": {"__class__": f"{USERPKG}.Color", "args": [1]}})
    save("path.pt", {"p": pathlib.PurePosixPath("/data/run1/ckpt")}, {"p": "/data/run1/ckpt"})
    net = pkg.Net()
    save("module.pt", net, collections.OrderedDict(net.state_dict()))
    save("defaultdict.pt", {"d": collections.defaultdict(list, {"a": [1]})}, {"d": {"a": [1]}})
    save("protocol4.pt", {"w": w}, {"w": w}, pickle_protocol=4)
    save("legacy.pt", {"w": w}, _use_new_zipfile_serialization=False)
    with recorded_location("cuda:0"):
        save("cuda.pt", {"w": w, "args": argparse.Namespace(lr=0.5)}, {"w": w, "args": {"lr": 0.5}})
    with recorded_location("cuda:0"):
        save("cuda_plain.pt", {"w": w})
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), folder / "scripted.pt")
    out["scripted.pt"] = folder / "scripted.pt"
    out.expected["scripted.pt"] = None

    # A class defined in the script that saved the file (__main__).
    script = folder / "save_main.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        class MainThing:
            def __init__(self):
                self.value = 7
        torch.save({{"thing": MainThing()}}, {str(folder / 'main.pt')!r})
    """))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    out["main.pt"] = folder / "main.pt"
    out.expected["main.pt"] = {"thing": {"value": 7}}

    # Not checkpoints at all, or cut short.
    (folder / "lfs.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n")
    (folder / "page.pt").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    data = (folder / "plain.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    (folder / "empty.pt").write_bytes(b"")
    for name in ("lfs.pt", "page.pt", "truncated.pt", "empty.pt"):
        out[name] = folder / name
        out.expected[name] = None
    return out


def _actual_loads(files: Files, names, extra: str = "") -> dict[str, str | None]:
    """name -> None when ``torch.load(path{extra})`` succeeds in a fresh process, else the error."""
    code = textwrap.dedent(f"""
        import json, sys, torch
        out = {{}}
        for name, path in json.loads(sys.argv[1]).items():
            try:
                torch.load(path{extra})
                out[name] = None
            except Exception as e:
                out[name] = f"{{type(e).__name__}}: {{e}}"[:600]
        print(json.dumps(out))
    """)
    paths = {n: str(files[n]) for n in names}
    r = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True,
                       env=_env(files.folder), timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def verdicts(files):
    machine = probe_machine(import_torch=True)
    target = target_for(machine=machine, import_torch=True)
    return {name: diagnose(str(path), target=target, machine=machine) for name, path in files.items()}


def test_verdicts_match_what_torch_does(files, verdicts):
    actual = _actual_loads(files, list(files))
    for name, d in verdicts.items():
        assert d.loads == (actual[name] is None), (name, d.reasons, actual[name])
        assert d.status == (0 if d.loads else 1), name
    # What the report names for the cases the issue lists.
    kinds = {n: {r.kind for r in d.reasons if r.blocks} for n, d in verdicts.items()}
    assert kinds["plain.pt"] == set()
    assert kinds["namespace.pt"] == {"globals"}
    assert verdicts["namespace.pt"].blocking == ["argparse.Namespace"]
    assert "numpy.dtypes.Float64DType" in verdicts["numpy.pt"].blocking
    assert set(verdicts["module.pt"].blocking) == {f"{USERPKG}.Net", "torch.nn.modules.linear.Linear",
                                                    "torch.nn.modules.activation.ReLU"}
    assert kinds["main.pt"] == {"main"} and verdicts["main.pt"].snippet is None and verdicts["main.pt"].convert
    assert kinds["protocol4.pt"] == {"protocol"} and verdicts["protocol4.pt"].snippet is None
    assert kinds["defaultdict.pt"] == {"globals", "dict_fills"} and verdicts["defaultdict.pt"].snippet is None
    assert kinds["lfs.pt"] == {"not_a_checkpoint"} and "git lfs pull" in verdicts["lfs.pt"].reasons[0].message
    assert kinds["page.pt"] == {"not_a_checkpoint"} and "HTML" in verdicts["page.pt"].reasons[0].message
    assert kinds["truncated.pt"] == {"truncated"}
    assert kinds["scripted.pt"] == {"torchscript"}
    for name in ("lfs.pt", "page.pt", "truncated.pt", "empty.pt"):
        assert verdicts[name].snippet is None and verdicts[name].convert is None, name
    has_gpu = "cuda" in verdicts["cuda.pt"].machine.devices
    assert ("device" in kinds["cuda.pt"]) == (not has_gpu)
    if not has_gpu:
        assert 'map_location="cpu"' in verdicts["cuda.pt"].snippet
        assert "--map-location" in verdicts["cuda.pt"].convert


def test_blocking_names_are_torchs_names(files, verdicts):
    """Named as get_unsafe_globals_in_checkpoint names them; the doctor adds only what that listing misses."""
    names = [n for n, d in verdicts.items() if d.format == "torch-zip"]
    code = textwrap.dedent("""
        import json, sys, torch
        out = {}
        for name, path in json.loads(sys.argv[1]).items():
            try:
                out[name] = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            except Exception as e:
                out[name] = f"{type(e).__name__}"
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, "-c", code, json.dumps({n: str(files[n]) for n in names})],
                       capture_output=True, text=True, env=_env(files.folder), timeout=300)
    listed = json.loads(r.stdout.strip().splitlines()[-1])
    for name in names:
        if isinstance(listed[name], str):          # torch cannot list it (protocol 4: "Unsupported operand")
            assert verdicts[name].loads is False
            continue
        blocking = set(verdicts[name].blocking)
        assert set(listed[name]) <= blocking, name
        assert all(n.startswith("numpy.dtypes.") for n in blocking - set(listed[name])), name


_FORKED_SNIPPETS = textwrap.dedent("""
    import json, os, sys
    import torch          # what every snippet imports first; each then runs in a forked child of this process
    results = {}
    for name, code in json.loads(sys.stdin.read()).items():
        pid = os.fork()
        if pid == 0:
            try:
                scope = {"__name__": "__main__"}
                exec(compile(code, name, "exec"), scope)
                ok = scope.get("checkpoint") is not None
            except BaseException as e:
                print(name, type(e).__name__, str(e)[-500:], file=sys.stderr)
                ok = False
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        results[name] = status == 0
    print(json.dumps(results))
""")


def _run_snippets(snippets: dict[str, str], folder) -> tuple[dict[str, bool], str]:
    """Run each snippet in a fresh child process (forked from one that imported only torch)."""
    r = subprocess.run([sys.executable, "-c", _FORKED_SNIPPETS], input=json.dumps(snippets), capture_output=True,
                       text=True, env=_env(folder), timeout=300, cwd=folder)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_every_snippet_loads_its_file(files, verdicts):
    snippets = {n: d.snippet for n, d in verdicts.items() if d.snippet}
    assert {"namespace.pt", "numpy.pt", "dataclass.pt", "slots.pt", "enum.pt", "path.pt", "module.pt"} <= set(snippets)
    results, errors = _run_snippets(snippets, files.folder)
    for name, ok in results.items():
        assert ok, (name, snippets[name], errors[-2000:])
        assert "weights_only=True" in snippets[name]
    assert "safe_globals([argparse.Namespace])" in snippets["namespace.pt"]
    # The check would catch a snippet that is short of what the load needs.
    short = snippets["numpy.pt"].replace("numpy.dtypes.Float64DType", "numpy.dtype")
    assert _run_snippets({"short": short}, files.folder)[0] == {"short": False}


def _convert(src, dest, extra_steps=()):
    from ckptviewer.core.edit.ops import RemapDevice, WeightsOnlySafe, apply_steps
    from ckptviewer.core.read.open import open_checkpoint
    from ckptviewer.core.write.export import ExportOptions, export
    with open_checkpoint(src) as ckpt:
        steps = [WeightsOnlySafe(), *extra_steps]
        if any(s.location.startswith("cuda") for s in ckpt.storages.values()):
            steps.append(RemapDevice((("*", "cpu"),)))
        root, log = apply_steps(ckpt.root, steps)
        export(root, str(dest), ExportOptions(fmt="pt"), sources=[src])
    return log


def _same(a, b, where="") -> None:
    if isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.detach().contiguous().view(torch.uint8).numpy().tobytes() == \
            b.detach().contiguous().view(torch.uint8).numpy().tobytes(), where
    elif isinstance(b, dict):
        assert isinstance(a, dict) and list(a) == list(b), (where, a, b)
        for k in b:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(b, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}/{i}")
    else:
        assert a == b and type(a) is type(b), (where, a, b)


def test_converted_copies_load_with_the_defaults_and_keep_everything(files, verdicts, tmp_path):
    todo = [n for n, d in verdicts.items() if d.convert and "--weights-only-safe" in d.convert]
    assert {"namespace.pt", "numpy.pt", "module.pt", "main.pt", "protocol4.pt", "defaultdict.pt", "cuda.pt",
            "enum.pt", "path.pt", "slots.pt", "dataclass.pt", "scripted.pt"} <= set(todo)
    outs = {}
    for name in todo:
        dest = tmp_path / f"out-{name}"
        log = _convert(files[name], dest)
        assert log.lines, name
        outs[name] = dest
    converted = Files(files.folder)
    converted.update(outs)
    actual = _actual_loads(converted, list(outs))
    assert all(v is None for v in actual.values()), actual
    for name, dest in outs.items():
        loaded = torch.load(dest, weights_only=True)       # a file this test wrote
        if files.expected[name] is not None:
            _same(loaded, files.expected[name], name)
    # The module's state_dict goes straight into a fresh module, and keeps its class names.
    sd = torch.load(outs["module.pt"], weights_only=True)
    sys.path.insert(0, str(files.folder))
    try:
        import importlib
        importlib.import_module(USERPKG).Net().load_state_dict(sd)
    finally:
        sys.path.remove(str(files.folder))
    assert sd._metadata[""]["module_class"] == f"{USERPKG}.Net"
    assert sd._metadata["fc"]["module_class"] == "torch.nn.modules.linear.Linear"


def test_the_report_lists_each_replacement(files):
    from ckptviewer.core.edit.ops import WeightsOnlySafe, apply_steps
    from ckptviewer.core.read.open import open_checkpoint
    with open_checkpoint(files["numpy.pt"]) as ckpt:
        _, log = apply_steps(ckpt.root, [WeightsOnlySafe()])
    text = "\n".join(log.lines)
    for key in ("acc", "step", "flag", "arr", "ids"):
        assert f"{key}: numpy" in text
    assert "replaced in all: " in text


def test_cli_json_contract_and_exit_status(files):
    def doctor(*args):
        return subprocess.run([sys.executable, "-m", "ckptviewer", "doctor", *map(str, args)], capture_output=True,
                              text=True, env=_env(files.folder), timeout=300)

    r = doctor("--json", files["namespace.pt"])
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["weights_only"] == {"loads": False, "blocking": ["argparse.Namespace"], "unpickler_accepts": False}
    assert "safe_globals([argparse.Namespace])" in out["fix"]["snippet"]
    assert out["fix"]["convert"].startswith("ckptviewer convert --weights-only-safe")
    r = doctor("--json", files["plain.pt"], files["legacy.pt"])
    assert r.returncode == 0
    both = json.loads(r.stdout)
    assert isinstance(both, list) and [d["weights_only"]["loads"] for d in both] == [True, True]
    assert both[1]["fix"] == {"snippet": None, "convert": None}
    assert any(x["kind"] == "legacy_mmap" and not x["blocks"] for x in both[1]["reasons"])
    r = doctor(files["plain.pt"], files["lfs.pt"], files.folder / "missing.pt")
    assert r.returncode == 2 and "missing.pt" in r.stderr
    assert "git lfs pull" in r.stdout and "LOADS" in r.stdout and "does NOT load" in r.stdout
    r = doctor("--torch", "1.9", files["plain.pt"])
    assert r.returncode == 2 and "not in the weights-only table" in r.stderr


def test_legacy_file_with_mmap_fails_as_the_note_says(files, verdicts):
    note = next(r for r in verdicts["legacy.pt"].reasons if r.kind == "legacy_mmap")
    assert not note.blocks and verdicts["legacy.pt"].loads
    actual = _actual_loads(files, ["legacy.pt"], extra=", mmap=True")
    assert actual["legacy.pt"] is not None and "mmap can only be used" in actual["legacy.pt"]


def test_older_releases_from_the_table(files):
    machine = probe_machine(import_torch=False)
    old = {v: target_for(v) for v in ("2.4", "2.5", "2.13")}

    def verdict(name, version):
        return diagnose(str(files[name]), target=old[version], machine=machine, import_torch=False)

    # set and complex: default from 2.6; a whole module needs builtins.set before that.
    assert verdict("plain.pt", "2.13").loads
    assert set(verdict("plain.pt", "2.5").blocking) == {"builtins.set", "builtins.complex"}
    assert "builtins.set" in verdict("module.pt", "2.4").blocking
    assert "builtins.set" not in verdict("module.pt", "2.13").blocking
    # numpy bytes go through _codecs.encode, a default only from 2.5.
    assert "_codecs.encode" in verdict("numpy.pt", "2.4").blocking
    assert "_codecs.encode" not in verdict("numpy.pt", "2.5").blocking
    # 2.4 has no safe_globals context manager: the snippet uses add_safe_globals and asks for weights_only.
    snippet = verdict("namespace.pt", "2.4").snippet
    assert "add_safe_globals([argparse.Namespace])" in snippet and "safe_globals([" not in snippet.replace(
        "add_safe_globals([", "")
    # __slots__ objects cannot be built before 2.6; a non-empty defaultdict can before 2.10.
    assert verdict("slots.pt", "2.5").snippet is None and verdict("slots.pt", "2.13").snippet
    assert verdict("defaultdict.pt", "2.5").snippet and verdict("defaultdict.pt", "2.13").snippet is None
    assert verdict("scripted.pt", "2.5").loads and not verdict("scripted.pt", "2.13").loads
    assert "weights_only=False" in "\n".join(verdict("namespace.pt", "2.5").text_lines())


def test_hostile_files_get_no_snippet_and_run_nothing(tmp_path, marker):
    payloads = hostile.payloads(marker)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(hostile.torch_zip(payloads["global_reduce_os_system"]))
    d = diagnose(str(bad), machine=probe_machine(import_torch=False), import_torch=False)
    assert d.loads is False and d.snippet is None
    assert "os.system" in d.blocking or "posix.system" in d.blocking
    assert d.weights_only_false.startswith("never")
    assert any(r.kind == "dangerous" for r in d.reasons)
    # A global whose name is code, not a Python name: never copied into a snippet.
    injected = "X]);import os;os.system('touch " + str(marker) + "');(["
    odd = tmp_path / "odd.pt"
    odd.write_bytes(hostile.torch_zip(hostile.PROTO2 + hostile.glob("somepkg", injected) + b")\x81."))
    d = diagnose(str(odd), machine=probe_machine(import_torch=False), import_torch=False)
    assert d.loads is False and d.snippet is None
    assert not marker.exists()


def test_the_doctor_answers_for_every_hostile_file_and_runs_nothing(tmp_path, marker):
    """Every payload in every container, and the resource attacks: a verdict (never an exception), no
    snippet that allowlists a dangerous global, and nothing run."""
    import corpus

    from ckptviewer.core.read.pickle.danger import danger_reason
    machine = probe_machine(import_torch=False)
    target = target_for(machine=machine)
    files = {}
    for pname, payload in {**hostile.payloads(marker), **hostile.more_payloads(marker)}.items():
        for cname, wrap in hostile.containers().items():
            files[f"{pname}-{cname}.pt"] = wrap(payload)
    files.update({f"attack-{k}.pt": v for k, v in corpus.resource_attacks().items()})
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        d = diagnose(str(path), target=target, machine=machine, import_torch=False)
        assert d.loads is not True or not any(r.blocks for r in d.reasons), name
        if d.snippet:
            assert not any(danger_reason(*n.rpartition(".")[::2]) for n in d.blocking), (name, d.snippet)
        d.to_json()
        d.text_lines()
        path.unlink()
    assert not marker.exists()
