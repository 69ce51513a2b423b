"""ONNX Runtime's intra-op thread pool at fork: the forked child's inference still finishes.

An ``InferenceSession`` with 4 intra-op threads runs a MatMul in the parent; a forked child
runs the same session 20 times. Measured here (onnxruntime 1.32): it always returns. The
library registers no pthread_atfork handler; it survives because its pool lets the calling
thread take back the work items no worker started, so the child does all the work alone.
That makes this an ``ok`` row under every launcher — a fork-safe library is a valid finding.
"""

from __future__ import annotations

import os

from lab.scenarios import Scenario, with_mp_default

THREADS = 4
SIZE = 512
RUNS = 20
LAUNCHERS = ("fork", "mp-fork", "pool-fork", "mp-spawn", "mp-forkserver", "pool-spawn")


def _model() -> bytes:
    """relu(a @ a), built in memory: no file, no download."""
    from onnx import TensorProto, helper

    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "a"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "lab", [tensor("a", TensorProto.FLOAT, [SIZE, SIZE])],
        [tensor("y", TensorProto.FLOAT, [SIZE, SIZE])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _session():
    import numpy
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(_model(), options,
                                           providers=["CPUExecutionProvider"])
    inputs = {"a": numpy.random.default_rng(0).standard_normal((SIZE, SIZE), dtype="float32")}
    return session, inputs


def prepare():
    import onnxruntime

    session, inputs = _session()
    session.run(None, inputs)  # starts the intra-op pool's threads
    print(f"parent {os.getpid()}: onnxruntime {onnxruntime.__version__}, "
          f"{THREADS} intra-op threads, one MatMul run", flush=True)
    return session, inputs


def handoff(state, pickles: bool):
    """Forked children use the inherited session; pickling launchers build their own."""
    return None if pickles else state


def child(state):
    session, inputs = state if state is not None else _session()
    for _ in range(RUNS):
        session.run(None, inputs)
    print(f"child {os.getpid()}: {RUNS} runs of the session finished", flush=True)


ONNXRUNTIME = Scenario(
    name="onnxruntime",
    summary="An ONNX Runtime session with 4 intra-op threads used in the parent, run 20 times "
            "in the forked child: it finishes (the caller takes back unstarted work): ok.",
    expected=with_mp_default(dict.fromkeys(LAUNCHERS, "ok")),
    prepare=prepare,
    child=child,
    handoff=handoff,
    requires=("onnxruntime", "onnx", "numpy"),
    expected_threads=("python",),
    default_timeout=30.0,
)
