"""A cheaper attention mask for the exported encoder graph.

PyTorch exports scaled-dot-product attention with a boolean mask as, in every layer, ``Where(mask,
0, -inf)`` added to the scores, and after the softmax an ``IsNaN``/``Where`` pair that zeroes the
rows a fully masked query would fill with NaN. Both touch a ``[rows, heads, width, width]`` tensor
per layer. With the masked value finite (``MASKED_SCORE``, as BERT's own additive mask), no row can
become NaN, the guard is dead and is removed; the masked positions still get exactly zero weight
(``exp(-10000)`` is 0 in float32), so every real sub-word's state is what it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MASKED_SCORE = -10000.0
"""What a masked position adds to its attention score: finite, far below any real score."""


def finite_attention_mask(path: Path, mask_input: str = "attention_mask") -> int:
    """Rewrite the ONNX graph at ``path`` in place: every ``Where(mask_input, 0, -inf)`` gets
    ``MASKED_SCORE`` instead of ``-inf``, then every ``IsNaN``/``Where`` guard after a softmax is
    dropped. Returns the guards dropped; a graph whose mask is not exactly that pattern (another
    encoder's export) is left as it was, and 0 returned."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    constants = {node.output[0]: node for node in nodes if node.op_type == "Constant"}
    mask_fills = [constants.get(node.input[2]) for node in nodes
                  if node.op_type == "Where" and node.input[0] == mask_input]
    if not mask_fills or any(fill is None or not _is_minus_infinity(fill) for fill in mask_fills):
        return 0
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    softmax_outputs = {node.output[0] for node in nodes if node.op_type == "Softmax"}
    guards = []
    for node in nodes:
        if node.op_type != "IsNaN" or node.input[0] not in softmax_outputs:
            continue
        wheres = consumers.get(node.output[0], [])
        if len(wheres) != 1 or wheres[0].op_type != "Where" or wheres[0].input[2] != node.input[0]:
            return 0
        guards.append((node, wheres[0]))
    if len(guards) != len(mask_fills):
        return 0
    for fill in mask_fills:
        tensor = fill.attribute[0].t
        tensor.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(tensor), MASKED_SCORE),
                                                tensor.name))
    bypass = {where.output[0]: isnan.input[0] for isnan, where in guards}
    for isnan, where in guards:
        model.graph.node.remove(isnan)
        model.graph.node.remove(where)
    for node in model.graph.node:
        node.input[:] = [bypass.get(name, name) for name in node.input]
    onnx.save(model, str(path))
    return len(guards)


def _is_minus_infinity(constant) -> bool:
    from onnx import numpy_helper

    if len(constant.attribute) != 1 or constant.attribute[0].name != "value":
        return False
    values = numpy_helper.to_array(constant.attribute[0].t)
    return values.size > 0 and bool(np.all(np.isneginf(values)))
