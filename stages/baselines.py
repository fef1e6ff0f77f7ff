"""Baselines that show what fine-tuning bought: the majority class, and a logistic-regression
probe on the frozen pretrained encoder (mean-pooled last hidden states)."""

from __future__ import annotations

import numpy as np
import torch

from stages.modeling import sorted_batches


def majority_predictions(train_labels: np.ndarray, n: int) -> np.ndarray:
    return np.full(n, np.bincount(train_labels).argmax())


@torch.inference_mode()
def mean_pooled(encoder, seqs: list[list[int]], batch_size: int, pad_id: int, device: torch.device,
                what: str | None = None) -> np.ndarray:
    """Sentence vectors: the mean of the encoder's last hidden states over real (non-pad) tokens."""
    encoder.eval()
    out = np.zeros((len(seqs), encoder.config.hidden_size), dtype=np.float32)
    for idx, ids, mask in sorted_batches(seqs, batch_size, pad_id, device, what):
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out[idx] = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy()
    return out


def probe_predictions(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return clf.fit(train_x, train_y).predict(test_x)


@torch.inference_mode()
def first_subtoken_states(encoder, seqs: list[list[int]], words: list[list[int]], batch_size: int, pad_id: int,
                          device: torch.device, what: str | None = None) -> list[np.ndarray]:
    """Per window: the encoder's last hidden state at each word's first sub-token (word order within the window)."""
    encoder.eval()
    out: list[np.ndarray] = [np.empty(0)] * len(seqs)
    for idx, ids, mask in sorted_batches(seqs, batch_size, pad_id, device, what):
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu().numpy()
        for row, i in enumerate(idx):
            out[i] = hidden[row, np.flatnonzero(np.asarray(words[i]) >= 0)]
    return out
