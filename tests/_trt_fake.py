"""A fake ``tensorrt`` module of one real TensorRT version, restricted to the names that version has.

``tests/data/tensorrt-api/<version>.json`` holds ``dir()`` of every class and the members of every
enum of the real ``tensorrt`` module of that version (read from the PyPI bindings wheels; copied
unchanged from the project's shared folder). :func:`make_trt` builds a module with that version's
module-level names only; each class the code meets (``Builder``, ``IBuilderConfig``,
``ICudaEngine``, ...) allows, on its instances and on the class, only the public attributes the real
class has in that version: reading or setting any other raises AttributeError, as the bindings do.
So code that touches a name a version lacks fails against that version's fake. Every public name
the code touches is recorded in ``trt._used`` (``"Owner.name"``, ``".name"`` for the module).

Behind the names is a small simulation without a GPU:

- ``OnnxParser`` reads the ONNX file with ``onnx``; the network has its inputs.
- ``build_serialized_network`` refuses weak-typing precision flags on a strongly typed network
  (as TensorRT does) and returns engine bytes holding the ONNX, the optimization profile, the
  profiling verbosity and one layer per Conv/Gemm/MatMul node, typed from the graph: int8 where
  the node reads a DequantizeLinear output, fp16 where its weight is fp16, fp32 otherwise, with a
  Reformat layer wherever the type changes.
- ``Runtime.deserialize_cuda_engine`` loads those bytes (None, after logging an error, for other
  bytes or another version's engine); ``execute_async_v3`` runs the ONNX with onnxruntime on the
  fake device memory of :class:`FakeBackend`, so outputs can be checked.
- ``EngineInspector.get_engine_information`` gives TensorRT's JSON: per-layer ``Format/Datatype``
  texts at DETAILED verbosity, "N/A due to dynamic shapes" unless its execution context has every
  input shape set, layer names only at other verbosities.
- ``gpu=False`` makes ``Builder(logger)`` and ``Runtime(logger)`` log TensorRT's CUDA error and
  raise pybind11's ``TypeError``, as on a machine without a usable GPU.
"""
from __future__ import annotations

import base64
import importlib
import json
import pkgutil
import types
from pathlib import Path

import numpy as np

import exporters.tensorrt
from exporters.tensorrt import DeviceBuffer, HostBuffer

API_DIR = Path(__file__).with_name("data") / "tensorrt-api"
VERSIONS = ("10.3.0", "10.13.3.9", "10.16.1.11", "11.4.0.106")
MAGIC = b"FAKE-TRT-ENGINE\n"
NO_GPU_ERROR = "createInferBuilder: Error Code 6: API Usage Error (CUDA initialization failure with error: 35)"
FORMATS = {  # texts of the real engine inspector
    "int8": "Thirty-two wide channel vectorized row major Int8 format",
    "fp16": "Channel major FP16 format where channel % 8 == 0",
    "fp32": "Row major linear FP32",
}


def load_api(version: str) -> dict:
    return json.loads((API_DIR / f"{version}.json").read_text())


# --------------------------------------------------------------------------------------------
# the name guard
# --------------------------------------------------------------------------------------------


def _user_defined(cls, name: str, obj=None) -> bool:
    """Whether ``name`` comes from the caller's own subclass (an ILogger subclass), not the fake."""
    fake = type.__getattribute__(cls, "_fake_class")
    if cls is fake:
        return False
    if obj is not None and name in object.__getattribute__(obj, "__dict__"):
        return True
    for klass in cls.__mro__:
        if klass is fake:
            return False
        if name in vars(klass):
            return True
    return False


def _check(cls, name: str, obj=None, setting: bool = False) -> None:
    fake = type.__getattribute__(cls, "_fake_class")
    if name in type.__getattribute__(fake, "_api"):
        type.__getattribute__(fake, "_trt")._used.add(f"{type.__getattribute__(fake, '_name')}.{name}")
        return
    if setting and cls is not fake:
        return  # the caller's subclass (of ILogger) keeps its own attributes, as with the bindings
    if not _user_defined(cls, name, obj):
        version = type.__getattribute__(fake, "_trt").__version__
        raise AttributeError(f"TensorRT {version}: {type.__getattribute__(fake, '_name')} has no attribute '{name}'")


class _GuardMeta(type):
    def __getattribute__(cls, name):
        if not name.startswith("_"):
            try:
                type.__getattribute__(cls, "_fake_class")
            except AttributeError:  # Guarded itself and the behaviour classes below
                pass
            else:
                _check(cls, name)
        return type.__getattribute__(cls, name)


class Guarded(metaclass=_GuardMeta):
    """Base of every fake class; internal state lives in names starting with ``_``."""

    def __getattribute__(self, name):
        if not name.startswith("_"):
            _check(type(self), name, self)
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            _check(type(self), name, self, setting=True)
        object.__setattr__(self, name, value)


class EnumMember:
    def __init__(self, owner: str, name: str, value: int):
        self.name, self.value, self._owner = name, value, owner

    def __int__(self):
        return self.value

    def __repr__(self):
        return f"<{self._owner}.{self.name}: {self.value}>"


class EnumType:
    """A TensorRT enum: only the members of this version exist."""

    def __init__(self, trt, name: str, members: list[str]):
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_name", name)
        for i, member in enumerate(members):
            object.__setattr__(self, member, EnumMember(name, member, i))

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)  # AttributeError for a member this version lacks
        if not name.startswith("_"):
            object.__getattribute__(self, "_trt")._used.add(f"{object.__getattribute__(self, '_name')}.{name}")
        return value


class FakeModule(types.ModuleType):
    def __getattribute__(self, name):
        value = types.ModuleType.__getattribute__(self, name)
        if not name.startswith("_"):
            types.ModuleType.__getattribute__(self, "_used").add(f".{name}")
        return value


# --------------------------------------------------------------------------------------------
# behaviour
# --------------------------------------------------------------------------------------------


def _member(trt, enum: str, name: str) -> EnumMember:
    return object.__getattribute__(trt._enums[enum], name)


def _log_error(trt, logger, message: str) -> None:
    logger.log(_member(trt, "ILogger.Severity", "ERROR"), message)


class ILogger(Guarded):
    def __init__(self):
        pass

    def log(self, severity, msg):
        raise NotImplementedError("a TensorRT logger overrides log")


class Builder(Guarded):
    def __init__(self, logger):
        if not self._trt._gpu:
            _log_error(self._trt, logger, NO_GPU_ERROR)
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self._logger = logger

    def create_network(self, flags):
        return self._trt._classes["INetworkDefinition"]._make(int(flags))

    def create_builder_config(self):
        return self._trt._classes["IBuilderConfig"]._make()

    def create_optimization_profile(self):
        return self._trt._classes["IOptimizationProfile"]._make()

    def build_serialized_network(self, network, config):
        trt = self._trt
        strongly = 1 << int(_member(trt, "NetworkDefinitionCreationFlag", "STRONGLY_TYPED"))
        weak = {"FP16", "INT8", "BF16", "FP8", "INT4"} & config._flags
        if network._flags & strongly and weak:
            _log_error(trt, self._logger, f"IBuilder::buildSerializedNetwork: Error Code 3: API Usage Error "
                                          f"(kSTRONGLY_TYPED network with {sorted(weak)} builder flags)")
            return None
        trt._builds.append((network, config))
        if trt._fail_build:
            _log_error(trt, self._logger, "Internal error: out of workspace\nmore details")
            return None
        dynamic = any(d < 0 for t in network._inputs for d in t._shape)
        if dynamic and not config._profiles:
            _log_error(trt, self._logger, "Network has dynamic or shape inputs, but no optimization profile")
            return None
        profile = config._profiles[0]._shapes if config._profiles else {
            t._name: [list(t._shape)] * 3 for t in network._inputs}
        header = {
            "version": trt.__version__, "strongly_typed": bool(network._flags & strongly),
            "verbosity": config._verbosity.name, "profile": profile, "layers": network._layers,
            "inputs": [[t._name, list(t._shape)] for t in network._inputs], "outputs": network._outputs,
            "onnx": base64.b64encode(network._onnx).decode(),
        }
        return trt._classes["IHostMemory"]._make(MAGIC + json.dumps(header).encode())


class IHostMemory(Guarded, bytes):
    @classmethod
    def _make(cls, data: bytes):
        return bytes.__new__(cls, data)


class INetworkDefinition(Guarded):
    @classmethod
    def _make(cls, flags):
        self = cls.__new__(cls)
        self._flags, self._inputs, self._outputs, self._layers, self._onnx = flags, [], [], [], b""
        return self

    @property
    def num_inputs(self):
        return len(self._inputs)

    def get_input(self, i):
        return self._inputs[i]


class ITensor(Guarded):
    @classmethod
    def _make(cls, name, shape, dtype):
        self = cls.__new__(cls)
        self._name, self._shape, self._dtype = name, tuple(shape), dtype
        return self

    name = property(lambda self: self._name)
    shape = property(lambda self: self._shape)
    dtype = property(lambda self: self._dtype)


class ParserError(Guarded):
    @classmethod
    def _make(cls, node, name, op, desc):
        self = cls.__new__(cls)
        self._node, self._node_name, self._op, self._desc = node, name, op, desc
        return self

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._node_name

    def node_operator(self):
        return self._op


def _layers(graph) -> list[dict]:
    """One layer per Conv/Gemm/MatMul node, typed from the graph as TensorRT's strong typing would."""
    from onnx import TensorProto

    produced = {out: n for n in graph.node for out in n.output}
    half = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT16}
    layers, previous = [], None
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        source = produced.get(node.input[0])
        weight = produced.get(node.input[1])
        if source is not None and source.op_type == "DequantizeLinear":
            kind = "int8"
        elif node.input[1] in half or (weight is not None and weight.op_type == "Cast"):
            kind = "fp16"
        else:
            kind = "fp32"
        if previous is not None and previous != kind:
            layers.append({"name": f"Reformatting CopyNode for Input Tensor 0 to {node.name}",
                           "type": "Reformat", "in": previous, "out": kind})
        layers.append({"name": node.name, "type": "CaskConvolution" if node.op_type == "Conv" else "CaskGemm",
                       "in": kind, "out": kind})
        previous = kind
    return layers


class OnnxParser(Guarded):
    def __init__(self, network, logger):
        self._network, self._errors = network, []

    def parse_from_file(self, path):
        import onnx

        data = Path(path).read_bytes()
        try:  # no onnx.checker: TensorRT's parser sorts the nodes itself (an fp16 ONNX's casts come last)
            model = onnx.load_from_string(data)
            if not model.graph.node:
                raise ValueError("the graph has no nodes")
        except Exception as exc:
            error = self._trt._classes["ParserError"]._make
            self._errors = [error(-1, "", "", f"Failed to parse ONNX model: {exc}\ntrace"),
                            error(-1, "", "", "second error")]
            return False
        graph, net = model.graph, self._network
        float_type = _member(self._trt, "DataType", "FLOAT")
        for value in graph.input:
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
            net._inputs.append(self._trt._classes["ITensor"]._make(value.name, dims, float_type))
        net._outputs = [value.name for value in graph.output]
        net._layers, net._onnx = _layers(graph), data
        return True

    @property
    def num_errors(self):
        return len(self._errors)

    def get_error(self, i):
        return self._errors[i]


class IOptimizationProfile(Guarded):
    @classmethod
    def _make(cls):
        self = cls.__new__(cls)
        self._shapes = {}
        return self

    def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's keyword names
        self._shapes[name] = [list(min), list(opt), list(max)]


class ITimingCache(Guarded):
    @classmethod
    def _make(cls, data):
        self = cls.__new__(cls)
        self._data = bytes(data)
        return self

    def serialize(self):
        return self._trt._classes["IHostMemory"]._make(self._data + b"+tactics")


class IBuilderConfig(Guarded):
    @classmethod
    def _make(cls):
        self = cls.__new__(cls)
        self._flags, self._pools, self._profiles, self._cache = {"TF32"}, {}, [], None  # TF32: TensorRT's default
        self._verbosity = _member(self._trt, "ProfilingVerbosity", "LAYER_NAMES_ONLY")
        return self

    def set_memory_pool_limit(self, pool, pool_size):
        self._pools[pool.name] = pool_size

    def set_flag(self, flag):
        self._flags.add(flag.name)

    def clear_flag(self, flag):
        self._flags.discard(flag.name)

    def add_optimization_profile(self, profile):
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache):
        return self._trt._classes["ITimingCache"]._make(serialized_timing_cache)

    def set_timing_cache(self, cache, ignore_mismatch):
        if cache._data == b"from another GPU":
            return False
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache

    @property
    def profiling_verbosity(self):
        return self._verbosity

    @profiling_verbosity.setter
    def profiling_verbosity(self, value):
        self._verbosity = value


class Runtime(Guarded):
    def __init__(self, logger):
        if not self._trt._gpu:
            _log_error(self._trt, logger, NO_GPU_ERROR.replace("createInferBuilder", "createInferRuntime"))
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(serialized_engine)
        if not data.startswith(MAGIC):
            _log_error(self._trt, self._logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                                "(Serialization assertion magicTagRead == kMAGIC_TAG failed.)\nmore")
            return None
        header = json.loads(data[len(MAGIC):])
        if header["version"] != self._trt.__version__:
            _log_error(self._trt, self._logger, f"IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                                f"(the engine was built by TensorRT {header['version']})")
            return None
        return self._trt._classes["ICudaEngine"]._make(header)


class ICudaEngine(Guarded):
    @classmethod
    def _make(cls, header):
        self = cls.__new__(cls)
        self._header = header
        self._names = [name for name, _ in header["inputs"]] + header["outputs"]
        return self

    @property
    def num_io_tensors(self):
        return len(self._names)

    @property
    def profiling_verbosity(self):
        return _member(self._trt, "ProfilingVerbosity", self._header["verbosity"])

    def get_tensor_name(self, index):
        return self._names[index]

    def _is_input(self, name):
        return name in dict(self._header["inputs"])

    def get_tensor_mode(self, name):
        return _member(self._trt, "TensorIOMode", "INPUT" if self._is_input(name) else "OUTPUT")

    def get_tensor_shape(self, name):
        if self._is_input(name):
            return tuple(dict(self._header["inputs"])[name])
        return (-1, -1)  # resolved by the context

    def get_tensor_dtype(self, name):
        return _member(self._trt, "DataType", "FLOAT")

    def get_tensor_profile_shape(self, name, profile_index):
        assert profile_index == 0
        return [tuple(s) for s in self._header["profile"][name]]

    def create_execution_context(self):
        return self._trt._classes["IExecutionContext"]._make(self)

    def create_engine_inspector(self):
        return self._trt._classes["EngineInspector"]._make(self)


class IExecutionContext(Guarded):
    @classmethod
    def _make(cls, engine):
        import onnxruntime as ort

        self = cls.__new__(cls)
        self._engine, self._shapes, self._addr, self._calls = engine, {}, {}, 0
        onnx_bytes = base64.b64decode(engine._header["onnx"])
        self._session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        return self

    def set_input_shape(self, name, shape):
        lo, _, hi = self._engine._header["profile"][name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name):
        if name in self._shapes:
            return self._shapes[name]
        feeds = {i.name: np.zeros(self._shapes[i.name], np.float32) for i in self._session.get_inputs()}
        out = [o.name for o in self._session.get_outputs()].index(name)
        return tuple(self._session.run(None, feeds)[out].shape)

    def set_tensor_address(self, name, memory):
        self._addr[name] = memory
        return True

    def execute_async_v3(self, stream_handle):
        """Up to the GPU call: run the ONNX on the inputs in fake device memory, write the outputs there."""
        backend = self._trt._backend
        self._calls += 1
        feeds = {}
        for i in self._session.get_inputs():
            shape = self._shapes[i.name]
            n = int(np.prod(shape)) * 4
            feeds[i.name] = backend.mem[self._addr[i.name]][:n].view(np.float32).reshape(shape)
        for o, y in zip(self._session.get_outputs(), self._session.run(None, feeds)):
            y = np.ascontiguousarray(y, np.float32)
            backend.mem[self._addr[o.name]][: y.nbytes] = y.reshape(-1).view(np.uint8)
        backend.clock += 1.0
        return True


class EngineInspector(Guarded):
    @classmethod
    def _make(cls, engine):
        self = cls.__new__(cls)
        self._engine, self._context = engine, None
        return self

    @property
    def execution_context(self):
        return self._context

    @execution_context.setter
    def execution_context(self, context):
        self._context = context

    def get_engine_information(self, format):  # noqa: A002 - TensorRT's keyword name
        header = self._engine._header
        if format.name != "JSON":
            return "\n".join(layer["name"] for layer in header["layers"])
        if header["verbosity"] != "DETAILED":
            return json.dumps({"Layers": [layer["name"] for layer in header["layers"]], "Bindings": []})
        inputs = dict(header["inputs"])
        known = self._context is not None and all(n in self._context._shapes for n in inputs)
        layers = []
        for layer in header["layers"]:
            def tensor(kind):
                return {"Name": "t", "Location": "Device",
                        "Format/Datatype": FORMATS[kind] if known else "N/A due to dynamic shapes"}
            layers.append({"Name": layer["name"], "LayerType": layer["type"], "Inputs": [tensor(layer["in"])],
                           "Outputs": [tensor(layer["out"])], "TacticValue": "0x0"})
        return json.dumps({"Layers": layers, "Bindings": list(inputs) + header["outputs"]})


IMPLEMENTED = {cls.__name__: cls for cls in (
    ILogger, Builder, IHostMemory, INetworkDefinition, ITensor, ParserError, OnnxParser, IOptimizationProfile,
    ITimingCache, IBuilderConfig, Runtime, ICudaEngine, IExecutionContext, EngineInspector)}


# --------------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------------


class FakeBackend:
    """Host numpy 'device' memory keyed by fake pointers; a clock that copies and kernels advance."""

    name = "fake"

    def __init__(self):
        self.mem: dict[int, np.ndarray] = {}
        self.next_ptr = 0x1000
        self.clock = 0.0
        self.closed = False

    def device_buffer(self, nbytes):
        ptr = self.next_ptr
        self.next_ptr += max(nbytes, 1) + 256
        self.mem[ptr] = np.zeros(max(nbytes, 1), np.uint8)
        return DeviceBuffer(ptr, nbytes, self.mem[ptr])

    def host_buffer(self, shape, dtype):
        return HostBuffer(np.zeros(shape, dtype))

    def stream(self):
        return object()

    def stream_handle(self, stream):
        return 42

    def event(self):
        return {"t": None}

    def record(self, event, stream):
        event["t"] = self.clock

    def synchronize(self, event):
        assert event["t"] is not None

    def elapsed_ms(self, start, end):
        return end["t"] - start["t"]

    def h2d(self, dev, host, stream):
        dev.handle[: host.array.nbytes] = host.array.reshape(-1).view(np.uint8)
        self.clock += 0.25

    def d2h(self, host, dev, stream):
        host.array.reshape(-1).view(np.uint8)[:] = dev.handle[: host.array.nbytes]
        self.clock += 0.125

    def device_name(self):
        return "Fake GPU"

    def versions(self):
        return {"cuda": "12.6"}

    def close(self):
        self.closed = True


def make_trt(version: str, gpu: bool = True, backend: FakeBackend | None = None) -> FakeModule:
    """The fake ``tensorrt`` module of ``version`` (one of :data:`VERSIONS`)."""
    api = load_api(version)
    trt = FakeModule("tensorrt")
    state = {"__version__": api["tensorrt_version"], "_used": set(), "_gpu": gpu, "_builds": [],
             "_fail_build": False, "_backend": backend or FakeBackend(), "_enums": {}, "_classes": {}}
    for name, value in state.items():
        setattr(trt, name, value)
    for name in api["classes"]["<module>"]:
        if not name.startswith("_"):
            setattr(trt, name, _module_function(trt, name))
    for name, members in api["enums"].items():
        trt._enums[name] = EnumType(trt, name, members)
        if "." not in name:
            setattr(trt, name, trt._enums[name])
    for name, names in api["classes"].items():
        if name == "<module>" or name in api["enums"]:
            continue
        base = IMPLEMENTED.get(name, Guarded)
        cls = _GuardMeta(name, (base,), {"_api": frozenset(names), "_name": name, "_trt": trt})
        cls._fake_class = cls
        trt._classes[name] = cls
        setattr(trt, name, cls)
    return trt


def _module_function(trt, name: str):
    def function(*args, **kwargs):
        return True  # init_libnvinfer_plugins and the like

    function.__name__ = name
    return function


# --------------------------------------------------------------------------------------------
# shared by the TensorRT tests
# --------------------------------------------------------------------------------------------

TRT_MODULES = [exporters.tensorrt] + [
    importlib.import_module(f"exporters.tensorrt.{m.name}") for m in pkgutil.iter_modules(exporters.tensorrt.__path__)
]


def patch_trt(monkeypatch, name: str, value) -> None:
    """Replace ``name`` in every exporters.tensorrt module that binds it.

    Each module looks a name up in its own namespace (``from ... import`` copies the binding), so a
    fake must go wherever the name is bound, not only where it is defined.
    """
    patched = [m for m in TRT_MODULES if hasattr(m, name)]
    assert patched, f"no exporters.tensorrt module has {name}"
    for module in patched:
        monkeypatch.setattr(module, name, value)


def tiny_cnn():
    """Conv, batch norm, ReLU, pooling and a linear layer: two layers TensorRT computes (conv, gemm)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 10),
    ).eval()
