"""ONNX graph surgery done once at load: fp16 weights to fp32 (fast CPU kernels) and unused outputs pruned."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_fp32_single_output(path: Path, output: str) -> bytes:
    """The model at `path` with fp16 tensors as fp32 and every graph output but `output` (and its nodes) removed.

    onnxruntime's CPU provider has few fp16 kernels, so an fp16 graph runs through casts and slow paths; side
    outputs (IS-Net returns 12, up to 64x512x512) cost a resize, a sigmoid and a copy each. Needs the `onnx` package.
    """
    return single_output_graph(path, output, fp32=True)


def single_output_graph(path: Path, output: str, *, fp32: bool = True, dynamic_batch: bool = False) -> bytes:
    """The model at `path` pruned to `output`; `fp32` converts fp16 tensors to fp32 (for the CPU), `dynamic_batch`
    frees the batch dimension of the input and output so one run can take several images (the GPU's batches)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph

    def to32(tensor: onnx.TensorProto) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    if fp32:
        for i, init in enumerate(graph.initializer):
            if init.data_type == TensorProto.FLOAT16:
                graph.initializer[i].CopyFrom(to32(init))
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                    attr.t.CopyFrom(to32(attr.t))
                elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                    attr.i = TensorProto.FLOAT
        for info in (*graph.value_info, *graph.input, *graph.output):
            if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
                info.type.tensor_type.elem_type = TensorProto.FLOAT

    _prune(graph, output)
    if dynamic_batch:
        for info in (*graph.input, *graph.output):
            dims = info.type.tensor_type.shape.dim
            if len(dims):
                dims[0].dim_param = "batch"
        del graph.value_info[:]  # recorded shapes say batch 1; onnxruntime infers them again
    return model.SerializeToString()


def _prune(graph, output: str) -> None:  # type: ignore[no-untyped-def]
    """Keep only `output` and the nodes it depends on, in topological order."""
    outputs = [o for o in graph.output if o.name == output]
    if not outputs:
        raise ValueError(f"the graph has no output named {output!r}")
    needed = {output}
    kept: set[int] = set()
    changed = True
    while changed:  # the exported graph is not topologically sorted, so iterate to a fixed point
        changed = False
        for i, node in enumerate(graph.node):
            if i not in kept and any(o in needed for o in node.output):
                kept.add(i)
                needed.update(node.input)
                changed = True
    available = {t.name for t in graph.initializer} | {t.name for t in graph.input} | {""}
    pending = sorted(kept)
    ordered = []
    while pending:
        ready = [i for i in pending if all(x in available for x in graph.node[i].input)]
        if not ready:
            raise ValueError("the graph has a cycle or a dangling input")
        for i in ready:
            ordered.append(graph.node[i])
            available.update(graph.node[i].output)
        done = set(ready)
        pending = [i for i in pending if i not in done]
    del graph.output[:]
    graph.output.extend(outputs)
    ordered = [type(n).FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(ordered)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)


# --- int8 ------------------------------------------------------------------------------------------------------
CALIBRATION = Path(__file__).resolve().parents[1] / "calibration" / "isnet-medium-minmax.json"


def QUANT_OPTIONS() -> dict:  # noqa: N802 - reads as the constant it is, built lazily to import onnxruntime late
    """The int8 recipe: QDQ, u8 activations, per-channel s8 Conv weights, min/max ranges (ORT's advice for VNNI)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
            "per_channel": True, "reduce_range": False, "op_types_to_quantize": ["Conv"],
            "calibrate_method": CalibrationMethod.MinMax}


def quantize_int8(fp32_model: bytes, dest: Path, calibration: Path = CALIBRATION) -> None:
    """Write the int8 (QDQ) version of an fp32 graph to `dest`, from the committed activation ranges."""
    import onnx
    from onnxruntime.quantization import quantize_static

    if not calibration.is_file():
        raise FileNotFoundError(f"no calibration ranges at {calibration}; run scripts/calibrate_isnet.py")
    quantize_static(onnx.load_from_string(fp32_model), str(dest), None, calibration_cache_path=str(calibration),
                    **QUANT_OPTIONS())
