"""Baselines that show what fine-tuning bought: the majority class, and a logistic-regression
probe on the frozen pretrained encoder (mean-pooled last hidden states)."""

from __future__ import annotations

import numpy as np
import torch

from stages.modeling import pad_batch


def majority_predictions(train_labels: np.ndarray, n: int) -> np.ndarray:
    return np.full(n, np.bincount(train_labels).argmax())


@torch.inference_mode()
def mean_pooled(encoder, seqs: list[list[int]], batch_size: int, pad_id: int, device: torch.device) -> np.ndarray:
    """Sentence vectors: the mean of the encoder's last hidden states over real (non-pad) tokens."""
    encoder.eval()
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), encoder.config.hidden_size), dtype=np.float32)
    for start in range(0, len(seqs), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
        hidden = encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        m = mask.to(device).unsqueeze(-1).to(hidden.dtype)
        out[idx] = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy()
    return out


def probe_predictions(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return clf.fit(train_x, train_y).predict(test_x)
