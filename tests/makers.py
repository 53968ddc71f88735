"""Checkpoints made by torch at test time, one per case DESIGN.md says must work.

``build_all(folder)`` writes them and returns a :class:`Made` mapping names to paths, plus the
expected tensors (computed by torch from the objects saved) for comparisons.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import copy
import hashlib
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.serialization as serialization

from models import BNNet, Discriminator, Generator, Net, TiedLM


def sha256_of(t: torch.Tensor) -> str:
    t = t.detach().contiguous().reshape(-1)
    if t.numel() == 0:
        return hashlib.sha256(b"").hexdigest()
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()


def flatten(obj, prefix=()):
    """(key path, tensor) pairs as the conformance contract defines them."""
    if isinstance(obj, torch.Tensor):
        yield list(prefix), obj
    elif isinstance(obj, nn.Module):
        for name, value in obj.state_dict(keep_vars=True).items():
            yield list(prefix) + [name], value
        yield from module_attribute_tensors(obj, prefix)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, prefix + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten(v, prefix + (i,))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for name, v in vars(obj).items():        # an object pickled with its __dict__: by attribute name
            yield from flatten(v, prefix + (name,))


def module_attribute_tensors(module: nn.Module, prefix=()):
    """What a pickled module holds outside its state_dict, keyed as ckptviewer lists it: non-persistent
    buffers under [submodule, "__dict__", "_buffers", name], plain tensor attributes (and tensors in lists,
    tuples and dicts held as attributes) under [submodule, "__dict__", name, ...]; the module itself has no
    submodule component."""
    for mod_name, mod in module.named_modules():
        base = list(prefix) + ([mod_name] if mod_name else []) + ["__dict__"]
        for name in mod._non_persistent_buffers_set:
            if mod._buffers.get(name) is not None:
                yield base + ["_buffers", name], mod._buffers[name]
        for name, value in vars(mod).items():
            if name in ("_parameters", "_buffers", "_modules") or isinstance(value, nn.Module):
                continue
            yield from flatten(value, tuple(base + [name]))


@contextlib.contextmanager
def recorded_location(location: str):
    """Make torch.save record ``location`` (e.g. "cuda:1") for CPU storages: GPU files without a GPU."""
    def tag(obj):
        device = getattr(obj, "device", None)
        return location if device is not None and device.type == "cpu" else None

    entry = (0, tag, lambda obj, loc: None)
    serialization._package_registry.insert(0, entry)
    try:
        yield
    finally:
        serialization._package_registry.remove(entry)


def train(model, optimizer, steps=2, input_shape=None):
    torch.manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        if input_shape is not None:
            loss = model(torch.randn(*input_shape)).square().mean()
        else:
            loss = sum(p.square().sum() for p in model.parameters())
        loss.backward()
        optimizer.step()
    return loss.detach()


class Made(dict):
    """name -> path, with ``objects[name]`` the object that was saved."""

    def __init__(self):
        super().__init__()
        self.objects = {}


def build_all(folder: Path) -> Made:
    folder = Path(folder)
    made = Made()

    def save(name, obj, *, legacy=False, location=None):
        path = folder / name
        ctx = recorded_location(location) if location else contextlib.nullcontext()
        with ctx:
            torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        made[name] = path
        made.objects[name] = copy.deepcopy(obj)   # training later changes the live tensors
        return path

    torch.manual_seed(0)
    net = Net()
    sgd = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    save("state_dict.pt", net.state_dict())
    save("optimizer_fresh.pt", sgd.state_dict())
    loss = train(net, sgd, input_shape=(4, 3, 32, 32))
    save("optimizer_trained.pt", sgd.state_dict())
    ckpt = {"epoch": 7, "model_state_dict": net.state_dict(), "optimizer_state_dict": sgd.state_dict(),
            "loss": loss}
    save("checkpoint.tar", ckpt)
    save("checkpoint_legacy.tar", ckpt, legacy=True)
    save("whole_model.pt", net)
    save("whole_model_legacy.pt", net, legacy=True)
    save("state_dict_legacy.pt", net.state_dict(), legacy=True)

    bn = BNNet()
    adam = torch.optim.Adam(bn.parameters(), lr=1e-3)
    bn.train()
    train(bn, adam, input_shape=(2, 3, 8, 8))
    save("bn_checkpoint.pt", {"epoch": 3, "model": bn.state_dict(), "optimizer": adam.state_dict()})
    save("bn_whole_model.pt", bn)

    gen, disc = Generator(), Discriminator()
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.01, momentum=0.5, weight_decay=1e-4)
    train(gen, opt_g)
    train(disc, opt_d)
    save("gan.tar", {"modelA_state_dict": gen.state_dict(), "modelB_state_dict": disc.state_dict(),
                     "optimizerA_state_dict": opt_g.state_dict(), "optimizerB_state_dict": opt_d.state_dict()})
    save("gan_modules.tar", {"gen": gen, "disc": disc})
    save("ensemble.pt", [Net().state_dict(), Net().state_dict(), Net().state_dict()])

    save("dataparallel.pt", nn.DataParallel(Net()).state_dict())
    save("dataparallel_checkpoint.pth", {"epoch": 30, "net": nn.DataParallel(net).state_dict(), "acc": 91.5})
    save("compiled.pt", OrderedDict(("_orig_mod." + k, v) for k, v in net.state_dict().items()))
    save("tied.pt", TiedLM().state_dict())
    save("tied_module.pt", TiedLM())

    save("gpu0.pt", net.state_dict(), location="cuda:0")
    save("gpu1_checkpoint.tar", ckpt, location="cuda:1")
    save("gpu0_legacy.pt", net.state_dict(), legacy=True, location="cuda:0")

    best = net.state_dict()          # a reference, not a copy: "best" silently equals "last"
    save("best_is_last.pt", {"best": best, "last": net.state_dict()})

    save("values.pt", {"epoch": np.int64(12), "acc": np.float64(0.93), "hist": [0.1, 0.01], "note": "hi",
                       "flags": {"amp": True, "seed": None}, "size": torch.Size([3, 224, 224]),
                       "table": np.arange(6, dtype=np.int32).reshape(2, 3), "device": torch.device("cuda", 1),
                       "dtype": torch.bfloat16, "ns": argparse.Namespace(lr=0.1, layers=[1, 2])})
    dtypes = OrderedDict((str(dt).removeprefix("torch."), (torch.randn(3, 4) * 3).to(dt))
                         for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8,
                                    torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool,
                                    torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2))
    save("dtypes.pt", dtypes)

    from safetensors.torch import save_file
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(sd, folder / "state_dict.safetensors", metadata={"epoch": "7"})
    made["state_dict.safetensors"] = folder / "state_dict.safetensors"
    made.objects["state_dict.safetensors"] = sd

    scripted = torch.jit.script(Net())
    torch.jit.save(scripted, folder / "scripted.pt")
    made["scripted.pt"] = folder / "scripted.pt"
    made.objects["scripted.pt"] = None

    # A whole model whose class lives in __main__ (as when saved from a training script).
    script = folder / "train_main.py"
    script.write_text(textwrap.dedent(f"""
        import torch, torch.nn as nn
        class Tiny(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)
        torch.save(Tiny(), {str(folder / 'main_module_legacy.pt')!r}, _use_new_zipfile_serialization=False)
        torch.save(Tiny(), {str(folder / 'main_module.pt')!r})
    """))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    made["main_module_legacy.pt"] = folder / "main_module_legacy.pt"
    made["main_module.pt"] = folder / "main_module.pt"
    return made


def expected_tensors(obj) -> dict[str, dict]:
    """JSON key -> {dtype, shape, sha256} for an object that was saved."""
    import json
    return {json.dumps(k): {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                            "sha256": sha256_of(t)} for k, t in flatten(obj)}
