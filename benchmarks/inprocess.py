"""In-process benchmark of the NER path (no serving): sentences/s of the span predictor one sentence
at a time and batched, against the bare encoder (the ceiling) and a Hugging Face token-classification
pipeline on the same encoder, all on the same CoNLL test sentences and torch thread count.

    python -m benchmarks.inprocess [--model DIR] [--sentences 1000] [--threads 1] [--batch-size 16] [--quick]
    python -m benchmarks.inprocess --device cuda --autocast float16 --hf-encoder checkpoint   # on a GPU

Rows (each repeated, interleaved, median reported):
  encoder      tokenizer + encoder forward only, the predictor's own length-planned batches
  one          SpanPredictor.predict([sentence]) per sentence
  batched      SpanPredictor.predict(chunk) per chunk of --batch-size sentences (what the NER
               replica does with a batch of requests)
  hf-pipeline  transformers pipeline("token-classification", aggregation_strategy="simple") on raw
               sentence strings, chunks of --batch-size, batch_size=--batch-size; its token head is
               fine-tuned briefly (cached under artifacts/hf-token-head): it measures the pipeline's
               overhead, not its accuracy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from benchmarks.common import argument_parser, markdown_table, write_results
from linkner.model.runtime import DEFAULT_RUNTIME, RUNTIMES
from linkner.paths import ARTIFACTS

if TYPE_CHECKING:
    from linkner.model.predictor import SpanPredictor
    from linkner.model.processes import PredictorProcesses

Words = Sequence[str]
HF_HEAD_DIR = ARTIFACTS / "hf-token-head"


@dataclass
class Row:
    """One measured configuration: the median (and best) of its repeats."""

    name: str
    description: str
    sentences: int
    words: int
    seconds: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.median_s

    def summary(self) -> dict[str, Any]:
        best = min(self.seconds)
        return {**asdict(self), "sentences_per_s": self.sentences_per_s, "words_per_s": self.words / self.median_s,
                "ms_per_sentence": 1000 * self.median_s / self.sentences, "best_sentences_per_s": self.sentences / best}


def load_sentences(path: Path, count: int) -> list[list[str]]:
    """The first ``count`` non-empty sentences of a CoNLL file, as word lists."""
    from linkner.data.readers import read_dataset

    return [list(s.tokens) for s in read_dataset(path) if len(s.tokens)][:count]


def chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _progress(items: Sequence, label: str, show: bool) -> Any:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, leave=False, unit="call")


def encoder_pass(predictor: "SpanPredictor", sentences: Sequence[Words], batch_size: int, show: bool = False) -> None:
    """The ceiling: for each chunk of ``batch_size`` sentences, the predictor's own layout (packed
    rows, or its padded batch plan), then tokenizer + encoder forward only (no spans, no head, no
    decoding)."""
    import torch

    from linkner.model.packing import plan_batches
    from linkner.model.span_model import encode_packed

    batcher, encoder = predictor.batcher, predictor.model.encoder
    with torch.inference_mode():
        for chunk in _progress(chunks(sentences, batch_size), "encoder", show):
            plan = [list(range(len(chunk)))]
            if len(chunk) > 1 and not predictor.pack_tokens:
                plan = plan_batches(batcher.subword_lengths(chunk), batch_size, predictor.overhead_tokens,
                                    predictor.max_batch_tokens)
            for group in plan:
                encoding = batcher.tokenizer([list(chunk[i]) for i in group], is_split_into_words=True, truncation=True,
                                             max_length=batcher.max_subwords, padding=True, return_tensors="pt")
                input_ids = encoding["input_ids"].to(predictor.device)
                attention_mask = encoding["attention_mask"].to(predictor.device)
                if predictor.pack_tokens and len(group) > 1:
                    encode_packed(encoder, input_ids, attention_mask, predictor.pack_tokens, predictor.first_position)
                else:
                    encoder(input_ids=input_ids, attention_mask=attention_mask)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()  # the other rows end in Python lists, which waits for the GPU


def predictor_pass(predictor: "SpanPredictor", sentences: Sequence[Words], batch_size: int,
                   show: bool = False) -> int:
    """``predict`` per chunk of ``batch_size`` sentences (1: one at a time); returns entities found."""
    found = 0
    for chunk in _progress(chunks(sentences, batch_size), f"predictor x{batch_size}", show):
        found += sum(map(len, predictor.predict(chunk)))
    return found


def process_passes(processes: "PredictorProcesses", sentences: Sequence[Words], batch_size: int, passes: int) -> int:
    """``passes`` callers, each sending its share of the chunks to worker processes one call at a
    time (what the ingress's embedded model runs: one pass per core); returns entities found."""
    import asyncio

    async def share(part: Sequence[Words]) -> int:
        return sum([sum(map(len, await processes.predict(chunk, ["confidence"]))) for chunk in chunks(part, batch_size)])

    async def every_share() -> int:
        return sum(await asyncio.gather(*[share(sentences[index::passes]) for index in range(passes)]))

    return asyncio.run(every_share())


def pipeline_pass(pipe: Any, sentences: Sequence[Words], batch_size: int, show: bool = False) -> int:
    """The HF pipeline on raw strings (``" ".join(words)``), per chunk of ``batch_size``."""
    texts = [" ".join(words) for words in sentences]
    found = 0
    for chunk in _progress(chunks(texts, batch_size), "hf-pipeline", show):
        found += sum(map(len, pipe(list(chunk), batch_size=batch_size)))
    return found


def export_checkpoint_encoder(model: Path, folder: Path) -> Path:
    """Save a LinkNER checkpoint's encoder and tokenizer as a plain Hugging Face model folder (for
    machines that have the checkpoint but not the encoder package)."""
    from linkner.model.checkpoint import load_checkpoint

    span_model, batcher = load_checkpoint(model, "cpu")
    span_model.encoder.save_pretrained(folder)
    batcher.tokenizer.save_pretrained(folder)
    return folder


def hf_token_head(train_path: Path, train_sentences: int, folder: Path = HF_HEAD_DIR, seed: int = 13,
                  show: bool = False, encoder: Path | None = None, device: str = "cpu") -> Path:
    """Fine-tune ``AutoModelForTokenClassification`` on ``encoder`` (default: the default encoder)
    for one epoch over the first ``train_sentences`` training sentences (BIO tags on each word's
    first sub-token) on ``device`` and save it to ``folder``; reuse a cached head trained on at
    least as many sentences."""
    import torch
    from transformers import AutoModelForTokenClassification

    from linkner.data.readers import read_dataset
    from linkner.data.tags import spans_to_tags
    from linkner.model.encoders import default_encoder_path, load_tokenizer, offline_hub

    marker = folder / "linkner_bench.json"
    if marker.is_file() and json.loads(marker.read_text())["train_sentences"] >= train_sentences:
        return folder
    offline_hub()
    data = [s for s in read_dataset(train_path) if len(s.tokens)][:train_sentences]
    tags = sorted({tag for s in data for tag in spans_to_tags(len(s.tokens), s.entities)} | {"O"})
    labels = {tag: index for index, tag in enumerate(sorted(tags, key=lambda t: (t != "O", t)))}
    _quiet_transformers()
    encoder = encoder or default_encoder_path()
    tokenizer = load_tokenizer(encoder)
    model = AutoModelForTokenClassification.from_pretrained(
        encoder, num_labels=len(labels), id2label={i: t for t, i in labels.items()}, label2id=labels).to(device)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for batch in _progress(chunks(data, 16), "fine-tune hf head", show):
        encoding = tokenizer([list(s.tokens) for s in batch], is_split_into_words=True, truncation=True,
                             max_length=128, padding=True, return_tensors="pt")
        targets = torch.full_like(encoding["input_ids"], -100)
        for row, sentence in enumerate(batch):
            word_tags = spans_to_tags(len(sentence.tokens), sentence.entities)
            previous = None
            for position, word in enumerate(encoding.word_ids(row)):
                if word is not None and word != previous:
                    targets[row, position] = labels[word_tags[word]]
                previous = word
        loss = model(**encoding.to(device), labels=targets.to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().to("cpu")
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    marker.write_text(json.dumps({"train_sentences": len(data), "epochs": 1, "encoder": str(encoder)}))
    return folder


def _quiet_transformers() -> None:
    """No load reports (the fresh classifier and the unused pooler are expected)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()


def hf_pipeline(folder: Path, device: str = "cpu") -> Any:
    """A token-classification pipeline on ``device`` that merges sub-words into entities."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    _quiet_transformers()
    model = AutoModelForTokenClassification.from_pretrained(folder)
    return pipeline("token-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(folder),
                    aggregation_strategy="simple", device=0 if device == "cuda" else -1)


def autocast_runs(runs: dict[str, tuple[str, Callable[[], Any]]], device: str,
                  dtype: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Each run inside ``torch.autocast(device, dtype)`` (``none``: unchanged): mixed precision
    for every row alike, the model's weights stay as loaded."""
    if dtype == "none":
        return runs
    import torch

    def wrapped(run: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with torch.autocast(device, dtype=getattr(torch, dtype)):
                return run()
        return call

    return {name: (f"{description}, autocast {dtype}", wrapped(run)) for name, (description, run) in runs.items()}


def measure(runs: dict[str, tuple[str, Callable[[], Any]]], sentences: Sequence[Words], repeats: int,
            warmup: dict[str, Callable[[], Any]] | None = None) -> list[Row]:
    """Run each configuration ``repeats`` times, interleaved (the machine drifts), after warm-ups."""
    for name, run in (warmup or {}).items():
        run()
    words = sum(map(len, sentences))
    rows = {name: Row(name, description, len(sentences), words, []) for name, (description, _) in runs.items()}
    for _ in range(repeats):
        for name, (_, run) in runs.items():
            started = time.perf_counter()
            run()
            rows[name].seconds.append(time.perf_counter() - started)
    return list(rows.values())


def ratios(rows: list[Row]) -> dict[str, float]:
    """batched / one-at-a-time, batched / encoder ceiling, batched / HF pipeline (where measured)."""
    by_name = {row.name: row.sentences_per_s for row in rows}
    batched = by_name["batched"]
    out = {"batched_over_one": batched / by_name["one"], "batched_over_encoder": batched / by_name["encoder"]}
    if "batched-padded" in by_name:
        out["packed_over_padded"] = batched / by_name["batched-padded"]
    if "hf-pipeline" in by_name:
        out["batched_over_hf_pipeline"] = batched / by_name["hf-pipeline"]
    return out


def markdown(rows: list[Row], ratio: dict[str, float], header: str) -> str:
    summaries = [(row, row.summary()) for row in rows]
    return "\n".join([header, "", markdown_table(
        ["configuration", "sentences/s", "words/s", "ms/sentence", "best sentences/s"],
        [(f"{row.name}: {row.description}", f"{s['sentences_per_s']:.1f}", f"{s['words_per_s']:.0f}",
          f"{s['ms_per_sentence']:.2f}", f"{s['best_sentences_per_s']:.1f}") for row, s in summaries]), "",
        markdown_table(["ratio", "value"],
                       [(name.replace("_", " "), f"{value:.2f}") for name, value in ratio.items()])])


def run_benchmark(model: Path, sentences: Sequence[Words], batch_size: int, repeats: int = 3,
                  hf_folder: Path | None = None, show: bool = False, device: str = "cpu",
                  autocast: str = "none", passes: int = 1,
                  pack_tokens: int | None = None, runtime: str = "eager") -> tuple[list[Row], dict[str, float]]:
    """Measure encoder / one / batched (and the HF pipeline when ``hf_folder`` is given; batched as
    ``passes`` calls at once in as many worker processes, when more than 1) on ``sentences`` on
    ``device`` in this process's current torch thread setting.
    ``pack_tokens`` is the predictor's option (None: its default); when it packs, the same batches
    padded are measured too ("batched-padded"). ``runtime`` is the encoder's (:mod:`linkner.model.runtime`)."""
    from linkner.model.predictor import SpanPredictor

    predictor = SpanPredictor.from_checkpoint(model, device=device, batch_size=batch_size, pack_tokens=pack_tokens,
                                              runtime=runtime)
    layout = f"packed rows of ~{predictor.pack_tokens} sub-words" if predictor.pack_tokens else "padded batches"
    runs: dict[str, tuple[str, Callable[[], Any]]] = {
        "encoder": (f"tokenizer + encoder, batched, {layout} (ceiling)",
                    lambda: encoder_pass(predictor, sentences, batch_size, show)),
        "one": ("predictor, one sentence at a time", lambda: predictor_pass(predictor, sentences, 1, show)),
        "batched": (f"predictor, {batch_size} sentences per call, {layout}",
                    lambda: predictor_pass(predictor, sentences, batch_size, show)),
    }
    if predictor.pack_tokens:
        padded = SpanPredictor.from_checkpoint(model, device=device, batch_size=batch_size, pack_tokens=0,
                                               runtime=runtime)
        runs["batched-padded"] = (f"predictor, {batch_size} sentences per call, padded batches",
                                  lambda: predictor_pass(padded, sentences, batch_size, show))
    processes = None
    if passes > 1:
        import torch

        from linkner.model.processes import PredictorProcesses, PredictorSpec

        processes = PredictorProcesses(PredictorSpec(str(model), device, torch.get_num_threads(),
                                                     {"batch_size": batch_size, "runtime": runtime}), passes)
        runs["batched-processes"] = (f"predictor, {batch_size} sentences per call, {passes} calls at once in "
                                     "worker processes", lambda: process_passes(processes, sentences, batch_size, passes))
    warm = sentences[: min(len(sentences), 2 * batch_size)]
    warmup = {"predictor": lambda: predictor_pass(predictor, warm, batch_size)}
    if hf_folder is not None:
        pipe = hf_pipeline(hf_folder, device)
        runs["hf-pipeline"] = (f"HF token-classification pipeline, {batch_size} strings per call",
                               lambda: pipeline_pass(pipe, sentences, batch_size, show))
        warmup["hf"] = lambda: pipeline_pass(pipe, warm, batch_size)
    warm_runs = autocast_runs({name: ("warm-up", run) for name, run in warmup.items()}, device, autocast)
    try:
        rows = measure(autocast_runs(runs, device, autocast), sentences, repeats,
                       {name: run for name, (_, run) in warm_runs.items()})
    finally:
        if processes is not None:
            processes.close()
    return rows, ratios(rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, data_dir=True, out="inprocess.json",
                             quick="200 sentences, 1 repeat, a cached or 300-sentence head")
    parser.add_argument("--sentences", type=int, default=1000, help="first N CoNLL test sentences")
    parser.add_argument("--threads", type=int, default=1, help="torch (and tokenizer) threads")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per predictor / pipeline call")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    parser.add_argument("--hf-train-sentences", type=int, default=2000, help="fine-tuning set of the HF token head")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF pipeline row")
    parser.add_argument("--hf-encoder", default=None,
                        help="encoder folder for the HF head (default: the default encoder package); "
                             "'checkpoint': export the --model checkpoint's encoder")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where every row runs")
    parser.add_argument("--autocast", default="none", choices=["none", "float16", "bfloat16"],
                        help="mixed precision for every row (GPU)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help="how the encoder runs: int8 (CPU) or eager float32; as ner.runtime")
    parser.add_argument("--pack-tokens", type=int, default=None,
                        help="sub-words per packed encoder row (0: padded batches; default: the predictor's, "
                             "packed on a CPU, padded on a GPU)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sentences, args.repeats = min(args.sentences, 200), 1
        if not (HF_HEAD_DIR / "linkner_bench.json").is_file():
            args.hf_train_sentences = min(args.hf_train_sentences, 300)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # the fast tokenizer's pool
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if args.threads == 1 else "true")
    import torch

    torch.set_num_threads(args.threads)
    sentences = load_sentences(args.data_dir / "test.txt", args.sentences)
    hf_folder = None
    if not args.no_hf:
        encoder = None
        if args.hf_encoder == "checkpoint":
            encoder = export_checkpoint_encoder(args.model, Path(tempfile.mkdtemp(prefix="linkner-encoder-")))
        elif args.hf_encoder:
            encoder = Path(args.hf_encoder)
        hf_folder = hf_token_head(args.data_dir / "train.txt", args.hf_train_sentences, show=True,
                                  encoder=encoder, device=args.device)
    rows, ratio = run_benchmark(args.model, sentences, args.batch_size, args.repeats, hf_folder, show=True,
                                device=args.device, autocast=args.autocast, pack_tokens=args.pack_tokens,
                                runtime=args.runtime)
    where = "CPU" if args.device == "cpu" else torch.cuda.get_device_name(0)
    header = (f"{len(sentences)} CoNLL-2003 test sentences ({sum(map(len, sentences))} words), in process on "
              f"{where}, encoder runtime {args.runtime if args.device == 'cpu' else 'eager'}, {args.threads} torch thread(s), batch size {args.batch_size}, autocast {args.autocast}, "
              f"median of {args.repeats} interleaved repeat(s); model `{args.model}`")
    result = {"model": str(args.model), "device": where, "autocast": args.autocast, "runtime": args.runtime,
              "threads": args.threads, "batch_size": args.batch_size, "pack_tokens": args.pack_tokens,
              "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "rows": [row.summary() for row in rows], "ratios": ratio}
    write_results(args.out, result, markdown(rows, ratio, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
