"""The weights-only table against the installed torch, so that it cannot go stale silently.

If torch is upgraded and one of these fails, read the new release's ``torch/_weights_only_unpickler.py``
and add its entry to ``ckptviewer/core/analyze/weights_only_table.py`` (and its opcodes to ``weights_only.py``).
"""
from __future__ import annotations

import inspect
import pickle
import re

import pytest
import torch
from torch import _weights_only_unpickler as wo

from ckptviewer.core.analyze.weights_only import ACCEPTED_OPCODES
from ckptviewer.core.analyze.weights_only_table import BLOCKED_MODULES, VERSIONS, nearest, release


def installed():
    rel = release(torch.__version__)       # raises (fails the test) for a release the table does not know
    return rel


def test_the_installed_release_is_in_the_table():
    assert installed().version in VERSIONS


def test_default_allowlist_matches_torchs_own():
    rel = installed()
    assert set(wo._get_allowed_globals()) == set(rel.default_allowed)


def test_globals_registered_by_importing_torch_match():
    # A fresh interpreter's user allowlist holds what `import torch` registers (this process may have more).
    import subprocess
    import sys
    code = ("import json, torch; from torch import _weights_only_unpickler as w; "
            "print(json.dumps(sorted(w._get_user_allowed_globals())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json
    assert set(json.loads(out.strip().splitlines()[-1])) == set(installed().registered_by_import_torch)


def test_accepted_opcodes_match_the_unpickler():
    source = inspect.getsource(wo.Unpickler.load)
    names = set(re.findall(r"key\[0\] == (\w+)\[0\]", source))
    for group in re.findall(r"key\[0\] in \[(.*)\]:", source):
        names.update(re.findall(r"(\w+)\[0\]", group))
    codes = {getattr(pickle, n)[0] for n in names}
    assert codes == set(ACCEPTED_OPCODES)


def test_blocked_modules_and_behaviours_match():
    rel = installed()
    assert set(getattr(wo, "_blocklisted_modules", ())) == (set(BLOCKED_MODULES) if rel.blocks_modules else set())
    load = inspect.getsource(wo.Unpickler)
    assert ("_check_set_item_target" in load) == rel.setitems_on_dicts_only
    assert ("_check_append_target" in load) == rel.appends_to_list_subclasses
    assert ("slotstate" in load) == rel.builds_slots
    assert hasattr(torch.serialization, "safe_globals") == rel.has_safe_globals_context


def test_release_parsing():
    assert release("2.6.0+cu124").version == "2.6"
    assert release("torch==2.10.1").version == "2.10"
    with pytest.raises(ValueError):
        release("1.13")
    with pytest.raises(ValueError):
        release("two")
    assert nearest("9.0.0").version == VERSIONS[-1]
    assert nearest(None).version == VERSIONS[-1]
    assert nearest("2.1.0").version == VERSIONS[0]


def test_releases_grow_monotonically():
    previous = frozenset()
    for v in VERSIONS:
        now = release(v).default_allowed
        assert previous <= now, v
        previous = now
    assert "builtins.set" not in release("2.5").default_allowed and "builtins.set" in release("2.6").default_allowed
    assert "_codecs.encode" not in release("2.4").default_allowed and "_codecs.encode" in release("2.5").default_allowed
