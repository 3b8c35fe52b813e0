"""An ONNX encoder graph (``linkner.model.runtime``) run by ONNX Runtime behind the Hugging Face
encoder's call, so the span model uses it unchanged."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import nn


class OnnxEncoder(nn.Module):
    """``encoder(input_ids=..., attention_mask=..., position_ids=...).last_hidden_state`` from an
    ONNX graph taking packed rows. A 2-D (padded) mask is widened to the graph's 4-D one, with
    positions counted from ``first_position``. It runs on as many intra-op threads as torch is set
    to at each call (one session per count; a worker lending its cores to a lone call uses them),
    its threads never spinning between calls (spinning would slow torch in the same process)."""

    def __init__(self, graph: Path, config: Any, first_position: int = 0) -> None:
        super().__init__()
        self.graph = Path(graph)
        self.config = config
        self.first_position = first_position
        self._sessions: dict[int, onnxruntime.InferenceSession] = {}
        self.eval()

    def session(self, threads: int) -> onnxruntime.InferenceSession:
        """The session running on ``threads`` intra-op threads."""
        if threads not in self._sessions:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[threads] = onnxruntime.InferenceSession(str(self.graph), options,
                                                                   providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> SimpleNamespace:
        if attention_mask.dim() == 2:  # padded rows: each sentence attends to its own sub-words
            width = input_ids.size(1)
            position_ids = self.first_position + torch.arange(width).expand_as(input_ids)
            attention_mask = attention_mask.bool()[:, None, None, :].expand(-1, 1, width, -1)
        feeds = {"input_ids": input_ids.cpu().numpy(), "position_ids": position_ids.cpu().numpy(),
                 "attention_mask": np.ascontiguousarray(attention_mask.cpu().numpy())}
        states = self.session(torch.get_num_threads()).run(None, feeds)[0]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(states))
