"""The data section of a training config."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # mqar | forgetting_mqar | needle | passkey | selective_copy | induction | set_disjointness
    # (memarch.data.tasks: each names the meaning of a slice's pair) | text (language modelling)
    task: str = "mqar"
    # task vocabulary (recall tasks: keys from the lower half, values from the upper; text: the
    # tokenizer's id count, which the model's vocab_size may exceed — padding is never predicted)
    vocab_size: int = 256
    train_slices: tuple[tuple[int, int], ...] = ((64, 4), (128, 8), (128, 16))  # (len, pairs)
    eval_slices: tuple[tuple[int, int], ...] = ((64, 4), (128, 8), (128, 16))  # (len, pairs)
    # needle: (len, needles); passkey: (len, digits); selective_copy: (len, data tokens);
    # induction: (len, triggers); set_disjointness: (first list len, second list len)
    needle_value_len: int = 1  # tokens per needle value (digits of a passkey)
    needle_depth: float | None = None  # % depth of one needle/passkey; None = drawn per example
    needle_passkey: bool = False  # passkey style: marker token + value_len digits
    needle_num_queries: int | None = None  # needles asked; None = all (fewer: distractors)
    num_train_examples: int = 20_000  # distinct training examples per slice
    num_eval_examples: int = 256  # test examples per slice
    power_a: float = 0.01  # MQAR query placement exponent (small = queries near the context)
    num_passes: int = 1  # times the context is repeated (JRT-style; mqar, set_disjointness)
    # forgetting MQAR: this fraction of each slice's pairs is re-assigned a new value after the
    # context (R = round(fraction·N) keys; the label is the latest value); 0 = plain MQAR;
    # task forgetting_mqar needs it in (0, 1] and re-assigns R = max(1, round(fraction·N))
    overwrite_fraction: float = 0.0
    # task overwrite_stream: slices are (len, live keys); see memarch.data.overwrite_stream
    stream_p_update: float = 0.5  # P(a write overwrites a written key while new keys remain)
    stream_query_prob: float = 0.2  # P(a non-filler event is a query once a key is written)
    stream_filler_ratio: float = 0.0  # P(an event is filler), in [0, 1)
    stream_unset_prob: float = 0.0  # P(a query asks a never-written key; answer UNSET)
    stream_final_queries: int = 0  # distinct written keys queried at the end of the stream
    # task segmented_recall: slices are (segments, segment len); see memarch.data.segmented_recall
    segment_facts: int = 4  # facts written at the start of each segment
    segment_distances: tuple[int, ...] = (0, 1, 2, 4)  # segment i asks facts of segment i − d
    segment_queries: int = 2  # facts asked per (segment, distance)
    seed: int = 0  # training data seed
    eval_seed: int = 12345  # test data seed (different from training)
    # task text (language modelling, memarch.data.text; docs/data.md): give text_dir or text_file
    text_dir: str = ""  # a directory written by `memarch data prepare` (pods: prepare it once)
    text_file: str = ""  # or local .txt/.jsonl/.parquet files (a path or glob), prepared on use
    text_field: str = "text"  # text_file: the .jsonl/.parquet field holding each document
    text_val_every: int = 100  # text_file: ~1 document in n is held out (memarch.data.prepare)
    data_dir: str = ""  # text_file: cache root ("" = $MEMARCH_DATA_DIR or ~/.cache/memarch)
    tokenizer: str = "byte"  # "byte", a tokenizer.json / SentencePiece .model, or their directory
    bos_id: int | None = None  # BOS id; None = the tokenizer files' own
    eos_id: int | None = None  # EOS id; None = the tokenizer files' own
    add_bos: bool = True  # each document starts with BOS (its first token is then a target)
    add_eos: bool = False  # each document ends with EOS (a target: the model learns to stop)
    seq_len: int = 256  # task text: tokens per packed training row
    worker_count: int = 0  # grain worker processes reading training rows (0: a background thread)
