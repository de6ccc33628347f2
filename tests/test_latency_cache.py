"""The latency table file as a shared cache: concurrent writers merge under a lock, one file
holds tables for several machines, a failed write is one clear line and leaves the old file,
and values read back are checked.

Nothing here times a graph: tables are filled by hand or by a fake runner on a tiny model.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from compress_base.errors import CompressError
from compressor.latency import LatencyTable, build_latency_model, hardware_fingerprint
from compressor.space import SearchSpace
from profiles import load_profile

from conftest import TINY_SHAPE, run_python, tiny_cnn

PROFILE = load_profile("cpu")
HW = hardware_fingerprint("onnxruntime-cpu", threads=1, clock="cpu", block=1)


def table_file(path: Path, keys=("base",)) -> Path:
    table = LatencyTable("cpu", dict(HW))
    for k in keys:
        table.add(k, [1.0])
    table.save(path)
    return path


# --------------------------------------------------------------------------- concurrent writers
def test_two_writers_of_one_file_keep_both_sets_of_entries(tmp_path):
    """Two runs read the same file, each measures its own layers, then each saves: the second
    save must not drop what the first wrote. A key both measured keeps the value saved first."""
    path = table_file(tmp_path / "t.json")
    a, b = LatencyTable.load(path, "cpu", HW), LatencyTable.load(path, "cpu", HW)
    a.add("only-a", [2.0])
    a.add("both", [3.0])
    a.calibrations["model-a"] = {"a": 1.0, "b": 0.0, "grid": 3}
    b.add("only-b", [4.0])
    b.add("both", [5.0])
    b.calibrations["model-b"] = {"a": 1.0, "b": 0.0, "grid": 3}
    a.save(path)
    b.save(path)
    merged = LatencyTable.load(path, "cpu", HW)
    assert set(merged.entries) == {"base", "only-a", "only-b", "both"}
    assert merged.ms("both") == 3.0  # a measurement once saved is never replaced
    assert set(merged.calibrations) == {"model-a", "model-b"}


def test_concurrent_saves_lose_nothing(tmp_path):
    """Threads with their own table objects save distinct entries at once, many times."""
    path = table_file(tmp_path / "t.json")
    n_threads, n_saves = 4, 15
    start = threading.Barrier(n_threads)
    errors = []

    def writer(t: int):
        try:
            table = LatencyTable.load(path, "cpu", HW)
            start.wait()
            for i in range(n_saves):
                table.add(f"t{t}-{i}", [1.0])
                table.save(path)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    keys = set(LatencyTable.load(path, "cpu", HW).entries)
    assert keys == {"base"} | {f"t{t}-{i}" for t in range(n_threads) for i in range(n_saves)}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- several machines in one file
class FakeRunner:
    """Latency read off the file size of each graph; whole models (``arch*``) twice as slow."""

    runtime = "onnxruntime-cpu"

    def __init__(self):
        self.calls = 0

    def measure(self, model, input_shape, batch=1, warmup=0, runs=1):
        self.calls += 1
        ms = 1e-5 * Path(model).stat().st_size
        return SimpleNamespace(p50=2 * ms + 0.1 if Path(model).name.startswith("arch") else ms)


@pytest.fixture(scope="module")
def tiny():
    net = tiny_cnn()
    return SimpleNamespace(net=net, space=SearchSpace.build(net, TINY_SHAPE, "tiny"))


def build(tiny, path, **kw):
    runner = FakeRunner()
    build_latency_model(tiny.space, tiny.net, PROFILE, path, 3, grid=2, rounds=1, threads=1, block=1, runner=runner,
                        **kw)
    return runner.calls


def test_cache_seen_through_another_cpu_affinity_measures_and_keeps_both(tiny, tmp_path, monkeypatch):
    """The same machine under `taskset -c 1` (one cpu): the automatic cache measures this
    hardware's table and keeps the other one; a table the user named for other hardware is refused."""
    path = tmp_path / "latency-cpu.json"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert build(tiny, path, cache=True) > 0
    assert build(tiny, path, cache=True) == 0  # all cached
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    assert build(tiny, path, cache=True) > 0
    assert build(tiny, path, cache=True) == 0
    devices = sorted(t["hardware"]["device"] for t in json.loads(path.read_text())["tables"])
    assert [d.rsplit("(", 1)[1] for d in devices] == ["1 cpus)", "2 cpus)"]
    assert build(tiny, path) == 0  # named explicitly, for this hardware: used
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    with pytest.raises(CompressError, match=r"not for cpu on .*\(3 cpus\).*: build one with `compress lut"):
        build(tiny, path)
    # offline (another machine): the profile's tables serve, whatever their hardware
    lat = build_latency_model(tiny.space, tiny.net, PROFILE, path, offline=True)
    assert lat.predict(tiny.space.full()) > 0


def test_table_file_of_format_1_is_still_read(tmp_path):
    table = LatencyTable("cpu", dict(HW))
    table.add("k", [1.5])
    old = {"format": 1, "kind": "compressor-latency-table", "profile": "cpu", "hardware": dict(HW),
           "settings": {}, "entries": table.entries, "calibrations": {}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert LatencyTable.load(path, "cpu", HW).ms("k") == 1.5
    table_file(path, ["k2"])  # saving keeps what the old file held
    assert set(LatencyTable.load(path, "cpu", HW).entries) == {"k", "k2"}


# --------------------------------------------------------------------------- failed writes
def test_unwritable_table_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    table = LatencyTable("cpu", dict(HW))
    table.add("k", [1.0])
    with pytest.raises(CompressError, match=r"^cannot write the latency table .*a_file/x.json \(.+: .*a_file\): "
                                            r"free space there or name another file \(--latency-table"):
        table.save(blocker / "x.json")


FULL_DISK = """
import resource, signal, sys
from compress_base.errors import CompressError
from compressor.latency import LatencyTable
path, limit = sys.argv[1], int(sys.argv[2])
table = LatencyTable.load(path)
for i in range(500):
    table.add(f"key-{i}", [1.0, 2.0])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG, as on a full disk
try:
    table.save(path)
except CompressError as exc:
    print(exc)
    sys.exit(2)
"""


def test_full_disk_keeps_the_previous_table(tmp_path):
    path = table_file(tmp_path / "t.json")
    before = path.read_bytes()
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    done = run_python(str(script), str(path), str(len(before) + 200), timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout.startswith(f"cannot write the latency table {path} (File too large): free space")
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.py", "t.json", "t.json.lock"]


# --------------------------------------------------------------------------- values read back
@pytest.mark.parametrize("where, value", [("ms", "NaN"), ("ms", "Infinity"), ("ms", "-0.5"), ("ms", "1e999"),
                                          ("rounds", "[1.0, NaN]"), ("rounds", "[-1.0]"), ("a", "-Infinity"),
                                          ("a", "-1.0"), ("points", '[{"raw": 1.0, "ms": NaN}]')])
def test_non_finite_or_negative_values_are_refused(tmp_path, where, value):
    path = table_file(tmp_path / "t.json", ["k"])
    data = json.loads(path.read_text())
    section = data["tables"][0]
    section["calibrations"]["m"] = {"a": 1.0, "b": 0.0, "grid": 3, "points": []}
    if where in ("ms", "rounds"):
        section["entries"]["k"][where] = "@@"
    else:
        section["calibrations"]["m"][where] = "@@"
    path.write_text(json.dumps(data).replace('"@@"', value))
    with pytest.raises(CompressError, match=rf"^latency table {path} holds .*: build it again with `compress lut`"):
        LatencyTable.load(path, "cpu", HW)


# --------------------------------------------------------------------------- the deployed precision
class GraphRecorder(FakeRunner):
    """:class:`FakeRunner` that also records the operators of every graph it times."""

    def __init__(self):
        super().__init__()
        self.graphs: list[tuple[str, set[str], set[int]]] = []

    def measure(self, model, input_shape, batch=1, warmup=0, runs=1):
        import onnx

        graph = onnx.load(str(model)).graph
        zeros = {t.data_type for t in graph.initializer if t.name.endswith("_zero_point")}
        self.graphs.append((Path(model).name, {n.op_type for n in graph.node}, zeros))
        return super().measure(model, input_shape, batch, warmup, runs)


def test_an_int8_table_times_q_dq_graphs_and_is_never_used_for_fp32(tiny, tmp_path):
    from onnx import TensorProto

    path = tmp_path / "latency-cpu.json"
    fp32 = GraphRecorder()
    build_latency_model(tiny.space, tiny.net, PROFILE, path, 3, grid=2, rounds=1, threads=1, block=1, runner=fp32,
                        cache=True)
    assert fp32.graphs and not any("QuantizeLinear" in ops for _, ops, _ in fp32.graphs)
    int8 = GraphRecorder()
    lat = build_latency_model(tiny.space, tiny.net, PROFILE, path, 3, grid=2, rounds=1, threads=1, block=1,
                              runner=int8, cache=True, precision="int8")
    assert len(int8.graphs) == len(fp32.graphs)  # measured anew: the fp32 table does not serve int8
    timed = [(name, ops, zeros) for name, ops, zeros in int8.graphs if ops != {"Identity"}]  # the null graph stays
    assert len(timed) == len(int8.graphs) - 1
    assert {name for name, _, _ in timed if name.startswith("arch")}  # whole models too, for the calibration
    for _, ops, zeros in timed:
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert TensorProto.UINT8 in zeros  # the cpu profile's onnxruntime recipe: u8 activations
    assert lat.table.hardware["precision"] == "int8"
    held = sorted(t["hardware"]["precision"] for t in json.loads(path.read_text())["tables"])
    assert held == ["fp32", "int8"]
    # offline, each precision finds its own table, and one never measured is refused
    for precision in ("fp32", "int8"):
        lat = build_latency_model(tiny.space, tiny.net, PROFILE, path, offline=True, precision=precision)
        assert lat.table.hardware["precision"] == precision
    with pytest.raises(CompressError, match=r"measured in fp32, int8, not in fp16, the precision this model ships in"):
        build_latency_model(tiny.space, tiny.net, PROFILE, path, offline=True, precision="fp16")


def test_a_table_named_for_another_precision_is_refused(tiny, tmp_path):
    path = tmp_path / "lut.json"
    build(tiny, path)  # fp32, the cpu profile's
    with pytest.raises(CompressError, match=r"not for cpu on .*int8.*: build one with `compress lut"):
        build(tiny, path, precision="int8")
