"""Reading checkpoints over the network: https:// (a loopback server of our own), hf:// (a stand-in Hub chosen
with HF_ENDPOINT), s3:// (moto's server); the block cache; error messages; credentials never shown.

Every server is started by the tests on 127.0.0.1 and counts what it sends, so the tests assert how many
bytes an operation moved, not only that it worked.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from netservers import FakeHub, FileServer

from ckptviewer.core.analyze.info import build_report
from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.util import task
from ckptviewer.core.util.errors import (
    CancelledError,
    CheckpointError,
    OfflineMissError,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteProtocolError,
    RemoteTimeoutError,
)

MiB = 1 << 20


@pytest.fixture(autouse=True)
def remote_env(tmp_path, monkeypatch):
    """A fresh cache folder and Hub home per test; no token from the machine; short network timeouts."""
    monkeypatch.setenv("CKPTVIEWER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("CKPTVIEWER_NET_TIMEOUT", "5")
    from ckptviewer.core.source import net
    net.forget_credentials()
    yield tmp_path
    net.forget_credentials()


def torch_bytes(obj, legacy: bool = False) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def safetensors_bytes(tensors) -> bytes:
    from safetensors.torch import save
    return save(tensors)


def tensors_of(ckpt) -> dict:
    return {tuple(path): t for path, t in ckpt.tensor_entries()}


def tensor_rows(report: dict) -> dict:
    return {json.dumps(t["key"]): (t["dtype"], t["shape"], t["device"], t.get("sha256")) for t in report["tensors"]}


# -- every conformance file reads over HTTP as it reads from disk ---------------------------------------
def test_every_conformance_file_reads_over_http_with_the_checksums_it_has_on_disk(conformance_dir):
    expected = json.loads((conformance_dir / "expected.json").read_text())
    files = {f"/{name}": (conformance_dir / name).read_bytes() for name in expected}
    with FileServer(files) as srv:
        for name, want in expected.items():
            with open_checkpoint(str(conformance_dir / name)) as local:
                on_disk = build_report(local, checksums=True)
            with open_checkpoint(srv.url(f"/{name}")) as remote:
                over_http = build_report(remote, checksums=True)
            assert over_http["format"] == want["format"] == on_disk["format"], name
            assert tensor_rows(over_http) == tensor_rows(on_disk), name
            want_rows = {json.dumps(t["key"]): (t["dtype"], t["shape"], t["device"], t["sha256"])
                         for t in want["tensors"]}
            assert tensor_rows(over_http) == want_rows, name


# -- what opening moves ---------------------------------------------------------------------------------
def big_zip(n_tensors: int = 8, mib_each: int = 4) -> bytes:
    import torch
    return torch_bytes({f"layer{i}.weight": torch.full((mib_each * MiB // 4,), float(i)) for i in range(n_tensors)})


def test_opening_a_zip_checkpoint_moves_its_directory_and_pickle_not_its_tensors():
    data = big_zip()                                      # 32 MiB of tensors
    with FileServer({"/m.pt": data}) as srv:
        with open_checkpoint(srv.url("/m.pt")) as ckpt:
            opened = srv.bytes_sent
            assert ckpt.format == "torch-zip" and len(ckpt.tensor_entries()) == 8
            assert opened <= 3 * MiB, f"opening moved {opened:,} bytes"
            assert srv.requests <= 3
            srv.reset()
            t = tensors_of(ckpt)[("layer5.weight",)]
            values = t.read()
            assert float(values[0]) == 5.0 and values.size == MiB
            # One tensor: its own 4 MiB plus at most a block on each side.
            assert t.nbytes <= srv.bytes_sent <= t.nbytes + 2 * MiB


def test_safetensors_header_is_read_by_range_and_a_tensor_moves_about_its_own_bytes():
    import torch
    data = safetensors_bytes({f"w{i}": torch.full((MiB,), float(i)) for i in range(6)})     # 24 MiB
    with FileServer({"/m.safetensors": data}) as srv:
        with open_checkpoint(srv.url("/m.safetensors")) as ckpt:
            assert ckpt.format == "safetensors"
            assert srv.bytes_sent <= 64 * 1024 and srv.requests == 1          # the header, in the first 64 KiB
            srv.reset()
            t = tensors_of(ckpt)[("w3",)]
            assert float(t.read()[7]) == 3.0
            assert t.nbytes <= srv.bytes_sent <= t.nbytes + 2 * MiB


def test_reopening_is_served_from_the_cache_and_works_offline(remote_env):
    data = big_zip(4, 2)
    srv = FileServer({"/m.pt": data}).start()
    url = srv.url("/m.pt")
    with open_checkpoint(url) as ckpt:
        first = build_report(ckpt, checksums=True)
    srv.reset()
    with open_checkpoint(url) as ckpt:              # unchanged file: one conditional request, no body
        again = build_report(ckpt, checksums=True)
    assert again["tensors"] == first["tensors"]
    assert srv.requests == 1 and srv.bytes_sent == 0
    srv.stop()
    with open_checkpoint(url) as ckpt:              # no server at all: what was read is still there
        offline = build_report(ckpt, checksums=True)
        assert any("cannot be reached" in w for w in ckpt.warnings)
    assert offline["tensors"] == first["tensors"]


def test_offline_reads_of_bytes_never_fetched_say_so():
    data = big_zip(4, 2)
    srv = FileServer({"/m.pt": data}).start()
    url = srv.url("/m.pt")
    with open_checkpoint(url):
        pass                                          # directory and pickle only
    srv.stop()
    with open_checkpoint(url) as ckpt:
        t = tensors_of(ckpt)[("layer2.weight",)]
        with pytest.raises(OfflineMissError, match="never fetched"):
            t.read()


def test_a_changed_file_is_read_anew_not_from_stale_blocks():
    import torch
    old = torch_bytes({"w": torch.zeros(1000)})
    new = torch_bytes({"w": torch.ones(1000)})
    with FileServer({"/m.pt": old}) as srv:
        with open_checkpoint(srv.url("/m.pt")) as ckpt:
            assert float(ckpt.root["w"].read()[0]) == 0.0
        srv.files["/m.pt"] = new
        with open_checkpoint(srv.url("/m.pt")) as ckpt:
            assert float(ckpt.root["w"].read()[0]) == 1.0


def test_the_cache_stays_under_its_cap(remote_env, monkeypatch):
    from ckptviewer.core.source.cache import shared_cache
    monkeypatch.setenv("CKPTVIEWER_CACHE_MAX", "10M")
    data = big_zip(8, 4)
    with FileServer({"/m.pt": data}) as srv:
        with open_checkpoint(srv.url("/m.pt")) as ckpt:
            for _, t in ckpt.tensor_entries():
                t.sha256()
        used, _ = shared_cache().usage()
        assert used <= 10 * MiB


def test_many_threads_reading_one_block_make_one_request():
    from ckptviewer.core.source.remote import open_remote
    data = os.urandom(4 * MiB)
    with FileServer({"/b.bin": data}, latency=0.05) as srv:
        rf = open_remote(srv.url("/b.bin"))
        srv.reset()
        out = []
        threads = [threading.Thread(target=lambda: out.append(bytes(rf.view(2 * MiB + 10, 100)))) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert out == [data[2 * MiB + 10:2 * MiB + 110]] * 8
        assert srv.requests == 1


# -- servers that misbehave -----------------------------------------------------------------------------
def test_a_server_that_ignores_range_gets_a_stated_full_download():
    import torch
    data = torch_bytes({"w": torch.arange(10.0)})
    notices = []
    with FileServer({"/m.pt": data}, ignore_range=True) as srv:
        with task.task_context(notice=notices.append):
            with open_checkpoint(srv.url("/m.pt")) as ckpt:
                assert ckpt.root["w"].read().tolist() == list(range(10))
    from ckptviewer.core.util.units import human_bytes
    assert len(notices) == 1 and "whole file" in notices[0] and "byte ranges" in notices[0]
    assert human_bytes(len(data)) in notices[0]


def test_legacy_files_are_downloaded_whole_with_the_size_said_first():
    import torch
    data = torch_bytes({"w": torch.arange(100.0)}, legacy=True)
    events = []
    with FileServer({"/old.pt": data}) as srv:
        with task.task_context(notice=lambda t: events.append(("notice", t)),
                               report=lambda p: events.append(("progress", p))):
            with open_checkpoint(srv.url("/old.pt")) as ckpt:
                assert ckpt.format == "torch-legacy"
                assert ckpt.root["w"].read()[99] == 99.0
    kinds = [k for k, _ in events]
    assert "notice" in kinds and kinds.index("notice") < len(kinds) - 1
    from ckptviewer.core.util.units import human_bytes
    notice = dict(events)["notice"]
    assert "legacy torch.save" in notice and human_bytes(len(data)) in notice
    downloads = [p for k, p in events if k == "progress" and p.what.startswith("Downloading")]
    assert downloads and downloads[0].total == len(data)


def test_not_found_and_auth_errors_are_one_line_and_say_what_to_do():
    with FileServer({"/m.pt": b"x"}, auth=("alice", "s3cret")) as srv:
        with pytest.raises(RemoteAccessError) as e:
            open_checkpoint(srv.url("/m.pt"))
        assert "HTTP 401" in str(e.value) and "USER:PASSWORD" in str(e.value) and "\n" not in str(e.value)
    with FileServer({}) as srv:
        with pytest.raises(RemoteNotFoundError) as e:
            open_checkpoint(srv.url("/missing.pt"))
        assert str(e.value).startswith("missing.pt: not found on the server (HTTP 404)")


def test_a_redirect_to_an_html_page_is_named():
    with FileServer({}, redirects={"/model.pt": "/login"}, html=("/login",)) as srv:
        with pytest.raises(RemoteProtocolError) as e:
            open_checkpoint(srv.url("/model.pt"))
    message = str(e.value)
    assert "web page (HTML)" in message and "after a redirect to" in message and "/login" in message


def test_timeouts_are_retried_then_reported(monkeypatch):
    import torch
    monkeypatch.setenv("CKPTVIEWER_NET_TIMEOUT", "0.3")
    data = torch_bytes({"w": torch.arange(4.0)})
    with FileServer({"/m.pt": data}, stall_s=1.0) as srv:
        srv.fail_next = ["stall"]                     # one stalled answer: the retry gets the file
        with open_checkpoint(srv.url("/m.pt")) as ckpt:
            assert ckpt.root["w"].read().tolist() == [0, 1, 2, 3]
        assert srv.requests >= 2
    with FileServer({"/m.pt": data}, stall_s=1.0) as srv:
        srv.fail_next = ["stall"] * 5
        with pytest.raises(RemoteTimeoutError) as e:
            open_checkpoint(srv.url("/m.pt") + "?v=2")
        assert "did not answer within 0.3 s (tried 3 times)" in str(e.value)
        assert "try again" in str(e.value)


def test_server_errors_are_retried():
    import torch
    data = torch_bytes({"w": torch.arange(4.0)})
    with FileServer({"/m.pt": data}) as srv:
        srv.fail_next = [503, 502]
        with open_checkpoint(srv.url("/m.pt")) as ckpt:
            assert ckpt.root["w"].read().tolist() == [0, 1, 2, 3]


def test_a_cancelled_task_stops_waiting_for_the_network(monkeypatch):
    import torch
    data = torch_bytes({"w": torch.arange(4.0)})
    stop = threading.Event()
    with FileServer({"/m.pt": data}, latency=3.0) as srv:
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        with task.task_context(cancelled=stop.is_set):
            with pytest.raises(CancelledError):
                open_checkpoint(srv.url("/m.pt"))
        assert time.monotonic() - started < 2.0
        del srv


# -- credentials ------------------------------------------------------------------------------------------
def test_credentials_in_a_url_are_used_but_never_shown(tmp_path, capfd):
    import torch
    data = torch_bytes({"w": torch.arange(4.0)})
    secret = "pa55-very-secret"
    with FileServer({"/m.pt": data}, auth=("alice", secret)) as srv:
        url = srv.url("/m.pt").replace("http://", f"http://alice:{secret}@")
        with open_checkpoint(url) as ckpt:
            assert ckpt.root["w"].read().tolist() == [0, 1, 2, 3]
            shown = f"{ckpt.path} {ckpt.name} {ckpt.warnings} {build_report(ckpt)}"
        assert secret not in shown and "alice" not in shown
        # A wrong password's error says what happened without repeating it.
        with pytest.raises(CheckpointError) as e:
            open_checkpoint(srv.url("/m.pt").replace("http://", "http://alice:wrong-pw@"))
        assert "wrong-pw" not in str(e.value) and "wrong-pw" not in repr(e.value.path)
        assert e.value.__cause__ is None and e.value.__suppress_context__
    # Nothing in the cache folder names the secret.
    for root, _, names in os.walk(tmp_path / "cache"):
        for n in names:
            assert secret.encode() not in (open(os.path.join(root, n), "rb").read() if n.endswith(".json") else b"")


def test_presigned_query_strings_are_masked_in_errors_and_the_cli(tmp_path):
    url_tail = "/gone.pt?X-Amz-Credential=AKIAABCDEFGHIJKLMNOP&X-Amz-Signature=deadbeefcafe&v=1"
    with FileServer({}) as srv:
        with pytest.raises(RemoteNotFoundError) as e:
            open_checkpoint(srv.url(url_tail))
        assert "deadbeefcafe" not in f"{e.value} {e.value.path}" and "AKIAABCDEFGHIJKLMNOP" not in str(e.value.path)
        run = subprocess.run([sys.executable, "-m", "ckptviewer", "info", srv.url(url_tail).replace(
            "http://", "http://bob:hunter2@")], capture_output=True, text=True, timeout=60,
            env={**os.environ, "CKPTVIEWER_CACHE_DIR": str(tmp_path / "c")})
    assert run.returncode == 1
    out = run.stdout + run.stderr
    assert "gone.pt" in out and "HTTP 404" in out
    for secret in ("deadbeefcafe", "AKIAABCDEFGHIJKLMNOP", "hunter2", "bob"):
        assert secret not in out


def test_redaction_helpers():
    from ckptviewer.core.util.locations import cache_key_url, location_name, redact, redact_url
    url = "https://u:p4ss@h.example:8443/a/m%20x.pt?X-Amz-Signature=abc&token=t0k&v=2"
    assert redact_url(url) == "https://***@h.example:8443/a/m%20x.pt?X-Amz-Signature=***&token=***&v=2"
    assert location_name(url) == "m x.pt"
    assert cache_key_url(url) == "https://h.example:8443/a/m%20x.pt?v=2"
    text = f"GET {url} failed; Authorization: Bearer hf_{'a' * 30} and AKIAABCDEFGHIJKLMNOP"
    cleaned = redact(text)
    assert "p4ss" not in cleaned and "t0k" not in cleaned and "hf_aaaa" not in cleaned and "AKIA" not in cleaned


# -- the Hub -----------------------------------------------------------------------------------------------
@pytest.fixture
def hub(monkeypatch):
    with FakeHub(gated={"org/gated": "hf_granted_token_123"}, private={"org/private": "hf_owner_token_456"}) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.base)
        yield h


def test_hub_files_open_at_revisions_and_in_dataset_repos(hub):
    import torch
    st = safetensors_bytes({"w": torch.arange(1000.0)})
    st_v1 = safetensors_bytes({"w": torch.zeros(1000)})
    pt = torch_bytes({"a": torch.arange(3.0)})
    hub.add("org/tiny", {"model.safetensors": st, "sub/x.pt": pt})
    hub.add("org/tiny", {"model.safetensors": st_v1}, revision="v1")
    hub.add("org/tiny", {"model.safetensors": st_v1}, revision="refs/pr/1")
    hub.add("org/data", {"shards/part.pt": pt}, kind="dataset")
    with open_checkpoint("hf://org/tiny/model.safetensors") as ckpt:
        assert ckpt.path == "hf://org/tiny/model.safetensors" and ckpt.root["w"].read()[999] == 999.0
    with open_checkpoint("hf://org/tiny@v1/model.safetensors") as ckpt:
        assert ckpt.root["w"].read()[999] == 0.0
    with open_checkpoint("hf://org/tiny@refs/pr/1/model.safetensors") as ckpt:
        assert ckpt.root["w"].read()[999] == 0.0
    with open_checkpoint("hf://org/tiny/sub/x.pt") as ckpt:
        assert ckpt.root["a"].read().tolist() == [0, 1, 2]
    with open_checkpoint("hf://datasets/org/data/shards/part.pt") as ckpt:
        assert ckpt.root["a"].read().tolist() == [0, 1, 2]
    with open_checkpoint("hf://org/tiny") as ckpt:                       # the repository: its model file
        assert ckpt.name == "model.safetensors"
    # A link copied from the Hub's web page opens the file, not the page.
    with open_checkpoint(f"{hub.base}/org/tiny/blob/main/model.safetensors") as ckpt:
        assert ckpt.format == "safetensors"
    paths = [r["path"] for r in hub.log]
    assert not any("agent-harnesses" in p for p in paths)            # no telemetry


def test_hub_errors_say_gated_private_or_missing_and_how_to_log_in(hub, monkeypatch):
    import torch
    st = safetensors_bytes({"w": torch.arange(10.0)})
    hub.add("org/tiny", {"model.safetensors": st})
    hub.add("org/gated", {"model.safetensors": st})
    hub.add("org/private", {"model.safetensors": st})
    cases = {
        "hf://org/tiny/nope.safetensors": (RemoteNotFoundError, "has no file 'nope.safetensors'"),
        "hf://org/tiny@v9/model.safetensors": (RemoteNotFoundError, "no revision 'v9'"),
        "hf://org/absent/model.safetensors": (RemoteAccessError, "not found, or it is private or gated"),
        "hf://org/private/model.safetensors": (RemoteAccessError, "private"),
        "hf://org/gated/model.safetensors": (RemoteAccessError, "gated repository"),
    }
    for url, (cls, text) in cases.items():
        with pytest.raises(cls) as e:
            open_checkpoint(url)
        assert text in str(e.value), url
        if cls is RemoteAccessError:
            assert "HF_TOKEN" in str(e.value) and "login" in str(e.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_789")
    with pytest.raises(RemoteAccessError) as e:
        open_checkpoint("hf://org/gated/model.safetensors")
    assert "gated" in str(e.value) and "hf_wrong_token_789" not in str(e.value) and e.value.__cause__ is None
    monkeypatch.setenv("HF_TOKEN", "hf_granted_token_123")
    with open_checkpoint("hf://org/gated/model.safetensors") as ckpt:
        assert ckpt.root["w"].read()[9] == 9.0
    monkeypatch.setenv("HF_TOKEN", "hf_owner_token_456")
    with open_checkpoint("hf://org/private/model.safetensors") as ckpt:
        assert ckpt.root["w"].read()[9] == 9.0
        assert "hf_owner_token_456" not in f"{ckpt.path} {ckpt.warnings} {build_report(ckpt)}"


def test_a_sharded_hub_checkpoint_opens_as_one_tree_fetching_only_shard_headers(hub):
    import torch
    shards, weight_map = {}, {}
    for s in range(4):
        name = f"model-0000{s + 1}-of-00004.safetensors"
        tensors = {f"layers.{s}.{p}": torch.full((MiB,), float(s)) for p in ("q", "k")}     # 8 MiB per shard
        shards[name] = safetensors_bytes(tensors)
        weight_map.update({k: name for k in tensors})
    index = json.dumps({"metadata": {"total_size": 32 * MiB}, "weight_map": weight_map}).encode()
    hub.add("org/big", {"model.safetensors.index.json": index, **shards})
    hub.reset()
    with open_checkpoint("hf://org/big") as ckpt:
        assert ckpt.format == "sharded safetensors" and len(ckpt.tensor_entries()) == 8
        assert "hf://" in ckpt.path and ckpt.meta["index"] == "model.safetensors.index.json"
        fetched = sum(1 for r in hub.log if "/resolve/" in r["path"])
        # The index, each shard's first 64 KiB (its header) and the API's small JSON answers: not a byte of
        # the 32 MiB of tensors beyond.
        assert hub.bytes_sent <= len(index) + 4 * 64 * 1024 + 16 * 1024, f"opening moved {hub.bytes_sent:,} bytes"
        assert fetched == 5
        assert float(tensors_of(ckpt)[("layers.2.k",)].read()[5]) == 2.0


def test_hub_reopen_works_offline_from_the_cache(hub):
    import torch
    hub.add("org/tiny", {"model.safetensors": safetensors_bytes({"w": torch.arange(100.0)})})
    with open_checkpoint("hf://org/tiny/model.safetensors") as ckpt:
        ckpt.root["w"].read()
    hub.stop()
    with open_checkpoint("hf://org/tiny/model.safetensors") as ckpt:
        assert ckpt.root["w"].read()[42] == 42.0
        assert any("cache" in w for w in ckpt.warnings)


# -- S3 (moto) ---------------------------------------------------------------------------------------------
@pytest.fixture
def s3(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
    import fsspec
    fsspec.filesystem("s3").clear_instance_cache()
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("ckpts")
    yield fs
    server.stop()
    fsspec.filesystem("s3").clear_instance_cache()


def test_s3_objects_open_by_range_and_errors_are_named(s3):
    import torch
    s3.pipe_file("ckpts/run1/model.pt", big_zip(4, 2))
    s3.pipe_file("ckpts/run1/old.pt", torch_bytes({"w": torch.arange(5.0)}, legacy=True))
    sent = []
    s3.connect().meta.events.register("before-send.s3", lambda request, **kw: sent.append(request))
    with open_checkpoint("s3://ckpts/run1/model.pt") as ckpt:
        assert ckpt.format == "torch-zip"
        assert float(tensors_of(ckpt)[("layer3.weight",)].read()[0]) == 3.0
    with open_checkpoint("s3://ckpts/run1/old.pt") as ckpt:
        assert ckpt.root["w"].read().tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(RemoteNotFoundError):
        open_checkpoint("s3://ckpts/run1/missing.pt")
    with pytest.raises(CheckpointError, match="holds 2 checkpoints"):
        open_checkpoint("s3://ckpts/run1")


def test_a_missing_optional_package_names_the_extra_to_install(monkeypatch):
    import fsspec

    from ckptviewer.core.util.errors import MissingDependencyError

    def no_package(protocol, **kw):
        raise ImportError("Install s3fs to access S3")
    monkeypatch.setattr(fsspec, "filesystem", no_package)
    with pytest.raises(MissingDependencyError) as e:
        open_checkpoint("s3://bucket/model.pt")
    assert 'pip install "ckptviewer[s3]"' in str(e.value)


# -- scan and the command line -----------------------------------------------------------------------------
def test_scan_of_a_url_walks_the_pickles_fetched_by_range(marker):
    import torch

    from ckptviewer.core.analyze.scan import scan_file
    data = torch_bytes({"w": torch.zeros(MiB), "big": torch.zeros(4 * MiB)})
    with FileServer({"/m.pt": data}) as srv:
        res = scan_file(srv.url("/m.pt"))
        assert res.error is None and res.format == "torch-zip" and res.status == 0
        assert srv.bytes_sent <= 3 * MiB          # the first block, the tail's blocks; not the 5 MiB of tensors
    assert not marker.exists()


def test_cli_commands_take_urls(tmp_path):
    import torch
    a = torch_bytes({"w": torch.arange(6.0), "b": torch.ones(2)})
    b = torch_bytes({"w": torch.arange(6.0), "b": torch.zeros(2)})
    env = {**os.environ, "CKPTVIEWER_CACHE_DIR": str(tmp_path / "c")}
    with FileServer({"/a.pt": a, "/b.pt": b}) as srv:
        def cli(*args):
            return subprocess.run([sys.executable, "-m", "ckptviewer", *args], capture_output=True, text=True,
                                  timeout=120, env=env)
        info = cli("info", "--json", "--checksums", srv.url("/a.pt"))
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["file"] == srv.url("/a.pt")
        diff = cli("diff", srv.url("/a.pt"), srv.url("/b.pt"))
        assert diff.returncode in (0, 1) and "b" in diff.stdout
        scan = cli("scan", srv.url("/a.pt"))
        assert scan.returncode == 0, scan.stderr
        out = tmp_path / "a.safetensors"
        conv = cli("convert", srv.url("/a.pt"), "-o", str(out))
        assert conv.returncode == 0, conv.stderr
    from safetensors.numpy import load_file
    assert load_file(str(out))["w"].tolist() == [0, 1, 2, 3, 4, 5]
    cache = subprocess.run([sys.executable, "-m", "ckptviewer", "cache"], capture_output=True, text=True, env=env)
    assert "holds" in cache.stdout and str(tmp_path / "c") in cache.stdout
    cleared = subprocess.run([sys.executable, "-m", "ckptviewer", "cache", "--clear"], capture_output=True,
                             text=True, env=env)
    assert cleared.returncode == 0 and "cleared" in cleared.stdout


# -- the block cache and the parsers on their own --------------------------------------------------------
def test_the_block_cache_refetches_a_cut_block_and_refuses_short_answers(tmp_path):
    from ckptviewer.core.source.cache import BlockCache
    data = os.urandom(3 * MiB + 123)
    calls = []

    def fetch(ranges):
        calls.append(ranges)
        return [data[s:e] for s, e in ranges]
    cache = BlockCache(str(tmp_path), cap=64 * MiB)
    key = cache.file_key("https://h/x", "etag:1")
    assert cache.read(key, len(data), 10, 2 * MiB, fetch) == data[10:2 * MiB]
    assert calls == [[(0, 2 * MiB)]]
    cache.forget(key)
    block = os.path.join(cache.root, "blocks", key[:2], key, "1.blk")
    with open(block, "r+b") as f:
        f.truncate(1000)                              # a block cut short by a crash or a full disk
    assert cache.read(key, len(data), MiB + 5, MiB + 10, fetch) == data[MiB + 5:MiB + 10]
    assert calls[-1] == [(MiB, 2 * MiB)]
    with pytest.raises(RemoteProtocolError):        # a server that sends more (or less) than asked
        cache.read(key, len(data), 3 * MiB, 3 * MiB + 50, lambda ranges: [data])
    assert not os.path.exists(os.path.join(cache.root, "blocks", key[:2], key, "3.blk"))
    with pytest.raises(OfflineMissError):
        cache.read(key, len(data), 3 * MiB, 3 * MiB + 50, None)


def test_hub_uris_parse_the_same_with_the_library_and_without_it():
    from ckptviewer.core.source.hub import _parse_plain, parse
    for url in ["hf://org/repo/model.safetensors", "hf://org/repo@v1/sub/model.pt", "hf://org/repo@refs/pr/3/m.bin",
                "hf://datasets/org/data@main/shards/a.pt", "hf://org/repo"]:
        assert parse(url, "https://huggingface.co") == _parse_plain(url), url


def test_a_remote_index_naming_a_shard_outside_its_folder_is_refused():
    import torch
    shard = safetensors_bytes({"a": torch.ones(2)})
    index = json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "../other/secret.safetensors",
                                       "c": "https://elsewhere.example/x.safetensors"}}).encode()
    with FileServer({"/m/model.safetensors.index.json": index, "/m/model-1.safetensors": shard,
                     "/other/secret.safetensors": shard}) as srv:
        with open_checkpoint(srv.url("/m/model.safetensors.index.json")) as ckpt:
            assert ckpt.root["a"].read().tolist() == [1, 1]
            assert "not a plain file name" in " ".join(ckpt.warnings)
        assert not any("secret" in r["path"] or "elsewhere" in r["path"] for r in srv.log)


def test_gcs_objects_open_by_range(monkeypatch):
    pytest.importorskip("gcsfs")
    import fsspec
    from netservers import FakeGCS
    with FakeGCS({"ckpts/run1/model.pt": big_zip(4, 2)}) as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.base)
        fsspec.filesystem("gs", token="anon").clear_instance_cache()
        with open_checkpoint("gs://ckpts/run1/model.pt") as ckpt:
            assert ckpt.format == "torch-zip"
            assert float(tensors_of(ckpt)[("layer3.weight",)].read()[0]) == 3.0
        assert gcs.bytes_sent <= 5 * MiB + 512 * 1024       # the 2 MiB tensor read and a few blocks, not 8 MiB
        with pytest.raises(RemoteNotFoundError):
            open_checkpoint("gs://ckpts/run1/missing.pt")


def test_doctor_diagnoses_a_url_and_suggests_a_local_output():
    import torch
    from ckptviewer.core.analyze.doctor import _convert_command, diagnose
    data = torch_bytes({"w": torch.arange(3.0)})
    with FileServer({"/runs/m.pt": data}) as srv:
        d = diagnose(srv.url("/runs/m.pt").replace("http://", "http://u:pw@"), import_torch=False)
        assert d.error is None and d.format == "torch-zip" and d.path == srv.url("/runs/m.pt").replace(
            "http://", "http://***@")
    command = _convert_command("https://example.org/runs/m.pt?sig=abc", safe=True)
    assert command.endswith("-o m.weights-only.pt") and "abc" not in command
