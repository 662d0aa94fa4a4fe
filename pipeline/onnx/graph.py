"""Read, validate and prepare an ONNX image classifier before anything converts it.

Every problem a user can fix is found here, before onnx2tf runs, because onnx2tf reports failures
as log lines and ``sys.exit(1)``. Only ``onnx`` is imported (no TensorFlow), so these checks are
cheap and testable on their own.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

from pipeline.errors import ConfigError, ConversionError

log = logging.getLogger(__name__)

Layout = Literal["NCHW", "NHWC"]
LAYOUTS: tuple[str, ...] = ("NCHW", "NHWC")
# onnx2tf maps ops by name alone; these are the domains whose op names mean what it expects.
CONVERTIBLE_DOMAINS = ("", "ai.onnx", "com.microsoft")
AXES = ("height", "width", "channels")
IMAGE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what an image model's channel dimension plausibly is


@dataclass(frozen=True)
class InputSize:
    """Height, width and channels; ``None`` where the caller does not say."""

    height: Optional[int] = None
    width: Optional[int] = None
    channels: Optional[int] = None

    def as_tuple(self) -> tuple[Optional[int], Optional[int], Optional[int]]:
        return (self.height, self.width, self.channels)


@dataclass(frozen=True)
class PreparedModel:
    """An ONNX model ready for onnx2tf and onnxruntime: fixed H/W/C, dynamic batch."""

    model: object  # onnx.ModelProto
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int]  # (height, width, channels)
    layout: str
    num_outputs: int
    softmax_removed: bool
    parameters: int
    macs: int

    def onnx_shape(self, batch: int | str = "batch") -> list:
        h, w, c = self.input_shape
        return [batch, c, h, w] if self.layout == "NCHW" else [batch, h, w, c]


def need(module: str):
    """Import one of the optional ONNX packages, or say how to install them (no traceback)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConversionError(
            f"{module} is not installed ({exc}). ONNX support is the optional extra edgeship[onnx]: "
            "pip install -e '.[onnx]' && pip install --no-deps 'tf-keras>=2.21,<2.22' (make setup does both)."
        ) from None


def load_onnx(path: Path, what: str = "ONNX model"):
    """``onnx.load`` + ``onnx.checker``; ConfigError naming the file if it is not valid ONNX."""
    onnx = need("onnx")

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist.")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise ConfigError(f"{what} {path} is not a valid ONNX file: it cannot be parsed as an ONNX model ({_first_line(exc)}).") from None
    # Before the checker: it rejects a custom-domain op as "not registered", which hides the real
    # problem (the op itself) behind a generic message.
    refuse_unsupported(model, f"{what} {path}")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ConfigError(f"{what} {path} is not a valid ONNX model: the ONNX checker says {_first_line(exc)}.") from None
    if not model.graph.node:
        raise ConfigError(f"{what} {path} is not a valid ONNX model: its graph has no nodes.")
    return model


def onnx2tf_ops() -> frozenset[str]:
    """Op types onnx2tf has a converter for (one module per op in ``onnx2tf/ops``), found without
    importing onnx2tf, which would import TensorFlow."""
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.origin:
        need("onnx2tf")
    ops_dir = Path(spec.origin).parent / "ops"
    return frozenset(p.stem for p in ops_dir.glob("*.py") if not p.stem.startswith("_"))


def _all_nodes(graph) -> list:
    """Nodes of ``graph`` and of every subgraph (If/Loop/Scan bodies)."""
    import onnx

    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    nodes.extend(_all_nodes(sub))
    return nodes


def unsupported_ops(model) -> list[str]:
    """``"Op (domain) at node 'name'"`` for every node onnx2tf cannot convert, first occurrence only."""
    known = onnx2tf_ops()
    found: dict[tuple[str, str], str] = {}
    for node in _all_nodes(model.graph):
        key = (node.domain or "", node.op_type)
        if key in found:
            continue
        if node.domain not in CONVERTIBLE_DOMAINS or node.op_type not in known:
            found[key] = node.name or "(unnamed)"
    return [
        f"{op}{f' (domain {domain})' if domain else ''} at node '{name}'" for (domain, op), name in found.items()
    ]


def refuse_unsupported(model, source: str) -> None:
    """ConversionError naming every operator of ``model`` that onnx2tf cannot convert."""
    bad = unsupported_ops(model)
    if bad:
        raise ConversionError(
            f"{source} uses {'an operator' if len(bad) == 1 else 'operators'} that onnx2tf cannot convert: "
            + "; ".join(bad)
            + ". Re-export the model without it (for PyTorch: a standard opset and no custom ops), or replace it "
            "with standard ONNX operators."
        )


def _dims(value_info) -> list[Optional[int]]:
    """Static sizes, ``None`` for symbolic or unknown dimensions."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


def _dim_names(value_info) -> list[str]:
    return [d.dim_param or ("?" if not d.HasField("dim_value") else str(d.dim_value)) for d in value_info.type.tensor_type.shape.dim]


def _read_layout(dims: Sequence[Optional[int]], layout: str) -> tuple[Optional[int], Optional[int], Optional[int]]:
    """(height, width, channels) of a rank-4 input read in ``layout``."""
    _, a, b, c = dims
    return (b, c, a) if layout == "NCHW" else (a, b, c)


def _fmt(values: Sequence[Optional[int]]) -> str:
    return "x".join("?" if v is None else str(v) for v in values)


def resolve_input_shape(
    dims: Sequence[Optional[int]],
    layout: str,
    size: InputSize,
    expected: Optional[tuple[int, int, int]],
    source: str,
    input_name: str,
    keys: dict[str, str],
) -> tuple[int, int, int]:
    """The (height, width, channels) the model will be converted for.

    Static dimensions come from the model and must match ``size`` and ``expected`` (the images the
    data pipeline makes); dynamic ones must be given in ``size``, because onnx2tf and the device
    need one fixed size. ``keys`` names the settings to mention: ``layout``, ``height``, ``width``,
    ``channels``.
    """
    if len(dims) != 4:
        raise ConfigError(
            f"{source}: input '{input_name}' has rank {len(dims)} ({_fmt(dims)}); an image classifier "
            "takes one rank-4 image batch (NCHW or NHWC)."
        )
    have = _read_layout(dims, layout)
    other = "NHWC" if layout == "NCHW" else "NCHW"
    flipped_channels = _read_layout(dims, other)[2]
    if expected is None and size.channels is None and have[2] not in (None, *IMAGE_CHANNELS) and flipped_channels in IMAGE_CHANNELS:
        raise ConfigError(
            f"{source}: input '{input_name}' has shape {_fmt(dims)}, which read as {layout} ({keys['layout']}) "
            f"would be {have[2]}-channel images of {have[0]}x{have[1]}; read as {other} it is {flipped_channels}-channel "
            f"images. The layout looks wrong: set {keys['layout']} to {other} (or give {keys['channels']} {have[2]} "
            "if the model really takes that many channels)."
        )
    resolved: list[int] = []
    for axis, static, given, want in zip(AXES, have, size.as_tuple(), expected or (None, None, None)):
        if static is None:
            if given is None:
                dynamic = [a for a, s in zip(AXES, have) if s is None]
                raise ConfigError(
                    f"{source}: input '{input_name}' has a dynamic {' and '.join(dynamic)} "
                    f"(shape {_fmt(dims)} read as {layout}), and no size is given for it. Set "
                    + " and ".join(keys[a] for a in dynamic)
                    + " to the size the model was trained at."
                )
            resolved.append(int(given))
            continue
        for value, says in ((given, f"{keys[axis]} is {given}"), (want, f"the data pipeline makes images with {axis} {want}")):
            if value is not None and int(value) != static:
                hint = ""
                flipped = _read_layout(dims, other)
                target = expected or tuple(v for v in size.as_tuple())
                if all(f is None or t is None or f == t for f, t in zip(flipped, target)):
                    hint = f" Read as {other} instead, the shape fits: the layout ({keys['layout']}: {layout}) looks wrong; set it to {other}."
                raise ConfigError(
                    f"{source}: input '{input_name}' has shape {_fmt(dims)}, which read as {layout} is "
                    f"{_fmt(have)} (height x width x channels), but {says}.{hint}"
                )
        resolved.append(static)
    return (resolved[0], resolved[1], resolved[2])


def _strip_final_softmax(model) -> bool:
    """Point the graph output at the input of a final Softmax node; True if one was removed.

    Distillation needs logits. LogSoftmax is left alone: it differs from the logits by one
    constant per image, which the softmax of distillation cancels.
    """
    graph = model.graph
    output = graph.output[0].name
    producers = [n for n in graph.node if output in n.output]
    if len(producers) != 1 or producers[0].op_type != "Softmax":
        return False
    node = producers[0]
    if any(node.output[0] in n.input for n in graph.node):
        return False
    graph.node.remove(node)
    graph.output[0].name = node.input[0]
    return True


def _set_shape(value_info, dims: Sequence) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


def _count_parameters(model) -> int:
    total = 0
    for init in model.graph.initializer:
        size = 1
        for d in init.dims:
            size *= int(d)
        total += size
    return total


def _count_macs(model) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul for one image, from inferred shapes (same
    convention as pipeline.models.cost: elementwise ops are not counted)."""
    shapes: dict[str, list[Optional[int]]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[vi.name] = _dims(vi)
    for init in model.graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or any(d is None for d in out[1:]):
            continue
        per_image = 1
        for d in out[1:]:
            per_image *= int(d)
        if node.op_type == "Conv" and len(node.input) > 1:
            weight = shapes.get(node.input[1])
            if weight and all(d is not None for d in weight):
                kernel = 1
                for d in weight[1:]:  # (out, in / group, kh, kw): in/group * kh * kw per output
                    kernel *= int(d)
                total += per_image * kernel
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            a = shapes.get(node.input[0])
            if a and a[-1] is not None:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                inner = a[-2] if trans_a and len(a) > 1 else a[-1]
                if inner is not None:
                    total += per_image * int(inner)
    return total


def prepare(
    model,
    layout: str,
    size: InputSize,
    expected: Optional[tuple[int, int, int]],
    source: str,
    keys: dict[str, str],
    strip_softmax: bool = False,
) -> PreparedModel:
    """Validate ``model`` for conversion and return a copy with fixed H/W/C and a dynamic batch.

    ConfigError / ConversionError (naming ``source``) for: an op onnx2tf cannot convert, more or
    fewer than one image input and one output, a dynamic size without ``size``, a static size that
    does not match (with a layout hint when the other layout would fit).
    """
    import onnx

    if layout not in LAYOUTS:
        raise ConfigError(f"{source}: layout {layout!r} ({keys['layout']}) must be one of {', '.join(LAYOUTS)}.")
    refuse_unsupported(model, source)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy we may edit
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ConfigError(
            f"{source} has {len(inputs)} inputs and {len(model.graph.output)} outputs; an image classifier "
            "must have exactly one image input and one output."
        )
    graph_input = inputs[0]
    elem = graph_input.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise ConfigError(
            f"{source}: input '{graph_input.name}' is {onnx.TensorProto.DataType.Name(elem)}; only float32 image inputs are supported."
        )
    dims = _dims(graph_input)
    log.debug("%s: input %s dims %s", source, graph_input.name, _dim_names(graph_input))
    hwc = resolve_input_shape(dims, layout, size, expected, source, graph_input.name, keys)
    removed = _strip_final_softmax(model) if strip_softmax else False
    h, w, c = hwc
    _set_shape(graph_input, ["batch", c, h, w] if layout == "NCHW" else ["batch", h, w, c])
    out_dims = _dims(model.graph.output[0])
    if out_dims:
        _set_shape(model.graph.output[0], ["batch"] + [d if d is not None else f"out_{i}" for i, d in enumerate(out_dims[1:], 1)])
    del model.graph.value_info[:]  # shapes recorded for the old batch size would contradict the new one
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        fixed = _fmt([None, c, h, w] if layout == "NCHW" else [None, h, w, c])
        raise ConfigError(f"{source}: shape inference failed with input shape {fixed}: {_first_line(exc)}.") from None
    out = _dims(model.graph.output[0])
    if not out or len(out) != 2 or out[1] is None:
        raise ConfigError(
            f"{source}: output '{model.graph.output[0].name}' has shape {_fmt(out)}; an image classifier outputs "
            "(batch, classes) scores with a fixed number of classes."
        )
    return PreparedModel(
        model=model,
        input_name=graph_input.name,
        output_name=model.graph.output[0].name,
        input_shape=hwc,
        layout=layout,
        num_outputs=int(out[1]),
        softmax_removed=removed,
        parameters=_count_parameters(model),
        macs=_count_macs(model),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
