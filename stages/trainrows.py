"""The train split as the training loop reads it: rows from the memory-mapped Arrow files through a torch DataLoader,
in length-grouped batches, padded one batch at a time. Nothing holds the whole split as Python objects: the batch
order is one int64 array (8 MB at 1M rows) and a batch's rows are read when the loop asks for them."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch

from stages.modeling import pad_batch

MEGA_BATCH = 50  # batches per length-sorted group: random enough to train well, similar lengths inside
LENGTH_CHUNK = 100_000  # rows per Arrow slice while reading lengths: bounded memory at any split size


def token_lengths(split) -> np.ndarray:
    """Each row's number of input ids, read from Arrow list offsets (no Python lists of ids)."""
    import pyarrow.compute as pc

    table = split.with_format("arrow", columns=["input_ids"])
    parts = [pc.list_value_length(table[i : i + LENGTH_CHUNK]["input_ids"]).to_numpy()
             for i in range(0, len(split), LENGTH_CHUNK)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def make_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group: bool) -> list[np.ndarray]:
    """Shuffled batches; with `group`, each run of MEGA_BATCH batches is sorted by length first (as HF's
    LengthGroupedSampler), so a batch pads to little more than its own texts."""
    order = rng.permutation(len(lengths))
    if group:
        mega = batch_size * MEGA_BATCH
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in np.split(order, range(mega, len(order), mega))])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if group else batches


class GroupedBatches:
    """A DataLoader batch sampler: an epoch's batches are a pure function of (seed, epoch), so a resumed run rebuilds
    the interrupted epoch's order and skips what it already trained on. Ours rather than transformers'
    LengthGroupedSampler (same grouping, same padding): that one builds the order as Python lists, 164 vs 26 MiB of
    RSS growth for 1M rows (bench/results/memory.json), and draws from a generator a resume would have to restore."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group: bool) -> None:
        self.lengths, self.batch_size, self.seed, self.group, self.epoch = lengths, batch_size, seed, group, 1

    def for_epoch(self, epoch: int) -> GroupedBatches:
        # not `set_epoch`: accelerate's DataLoaderShard calls that with its own count of iterations at every iter()
        self.epoch = epoch
        return self

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for idx in make_batches(self.lengths, self.batch_size, rng, self.group):
            yield idx.tolist()


class Collator:
    """Rows (dicts of input_ids and label) → the model's keyword arguments, padded to the batch's longest row; the
    task's `collate(targets, idx, width)` builds the labels. `n_tokens` (real, unpadded) is for the speed numbers."""

    def __init__(self, collate: Callable, pad_id: int) -> None:
        self.collate, self.pad_id = collate, pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([r["input_ids"] for r in rows], self.pad_id)
        labels = self.collate([r["label"] for r in rows], np.arange(len(rows)), ids.shape[1])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "n_tokens": mask.sum()}


class MaskedCollator:
    """Rows (input_ids, row: the window's number, offset_mapping when masking whole words) → a masked-LM batch:
    transformers' DataCollatorForLanguageModeling picks `probability` of the tokens (of the words, with `whole_word`)
    and masks them (80% [MASK], 10% a random token, 10% kept; whole words: all [MASK], the library's rule), labels -100
    elsewhere. Special tokens and padding are never picked. A batch's draws come from a generator seeded by (seed,
    epoch, its first row), not torch's global RNG: accelerate's DataLoader collates one batch ahead of the loop, so a
    checkpoint's RNG state already holds the next batch's draws, and a resume would mask that batch differently."""

    def __init__(self, tokenizer, probability: float, whole_word: bool, seed: int,
                 epoch: Callable[[], int] = lambda: 0) -> None:
        from transformers import DataCollatorForLanguageModeling

        # whole words: the library masks with [MASK] only (else it warns and switches); asked for here, no warning
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word else {}
        self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, whole_word_mask=whole_word,
                                                   **replace)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.pad_id, self.whole_word, self.seed, self.epoch = tokenizer.pad_token_id, whole_word, seed, epoch

    def bind(self, batches: GroupedBatches) -> MaskedCollator:
        """This collator with the epoch the batch sampler is in: what `loader(collator=...)` calls."""
        bound = copy.copy(self)
        bound.epoch = lambda: batches.epoch
        return bound

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([r["input_ids"] for r in rows], self.pad_id)
        special = torch.isin(ids, self.special) | (mask == 0)
        offsets = None
        if self.whole_word:  # character spans: the library joins sub-tokens with no gap between them into one word
            offsets = np.zeros((*ids.shape, 2), np.int64)
            for i, r in enumerate(rows):
                offsets[i, : len(r["offset_mapping"])] = r["offset_mapping"]
        entropy = [self.seed % 2**32, self.epoch(), int(rows[0]["row"])]
        self.mlm.generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        ids, labels = self.mlm.torch_mask_tokens(ids, special_tokens_mask=special, offset_mapping=offsets)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "n_tokens": mask.sum()}


def loader(split, collate: Callable, pad_id: int, batch_size: int, seed: int, group: bool,
           collator: Callable[[GroupedBatches], Callable] | None = None):
    """(DataLoader over the split's Arrow rows, its batch sampler). Its own generator: making an epoch's iterator then
    draws no number from torch's global RNG, which dropout uses and a checkpoint restores. `collator(batches)`, when
    given, builds the batches instead of `Collator(collate)`, from rows with every column (MaskedCollator.bind)."""
    from torch.utils.data import DataLoader

    batches = GroupedBatches(token_lengths(split), batch_size, seed, group)
    if collator is None:
        rows, collate_fn = split.select_columns(["input_ids", "label"]).with_format(None), Collator(collate, pad_id)
    else:
        rows, collate_fn = split.with_format(None), collator(batches)
    return DataLoader(rows, batch_sampler=batches, collate_fn=collate_fn,
                      generator=torch.Generator().manual_seed(seed)), batches
