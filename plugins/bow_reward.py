"""bow as a reward model on pairwise tasks: a linear reward r(text) = w . bag_of_words(text).

Bradley-Terry with a linear reward is logistic regression on the difference of the two sides' word
vectors: P(b preferred) = sigmoid(w . (x(b) - x(a))). Each pair is also shown mirrored, (a - b) with the
other label, so the fit has no side bias and needs no intercept. Soft targets become sample weights,
as in bow's classifier: the logistic loss then equals the soft cross-entropy of the pair distribution.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from w2s.api import Trained


class BowRewardTrained(Trained):
    """A fitted linear reward over a bag of words."""

    def __init__(self, vectorizer, weights: np.ndarray):
        self.vectorizer = vectorizer
        self.weights = weights

    def rewards(self, texts):
        return np.asarray(self.vectorizer.transform(list(texts)) @ self.weights, dtype=float).ravel()

    def predict(self, examples, task, ctx=None):
        """[P(a preferred), P(b preferred)] = softmax([r(a), r(b)]) per pair."""
        a = self.rewards([e.pair[0] for e in examples])
        b = self.rewards([e.pair[1] for e in examples])
        p_b = 1.0 / (1.0 + np.exp(-(b - a)))
        return np.stack([1.0 - p_b, p_b], axis=1)

    def parameter_counts(self):
        n = int(self.weights.size)
        return {"n_params": n, "n_params_non_embedding": n}

    def save(self, path: Path):
        path.write_bytes(pickle.dumps(("reward", self.vectorizer, self.weights)))


def fit_bow_reward(options, train, examples, soft_targets: np.ndarray, seed: int) -> BowRewardTrained:
    """Fit the linear reward on pairs; `soft_targets[i]` is the (a, b) preference distribution of pair i."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(ngram_range=(1, options.ngram_max), min_df=options.min_df, max_features=options.max_features,
                                 binary=options.binary)
    vectorizer.fit([text for e in examples for text in e.pair])
    diff = vectorizer.transform([e.pair[1] for e in examples]) - vectorizer.transform([e.pair[0] for e in examples])
    p_b = np.asarray(soft_targets)[:, 1]
    # rows: (b - a) labelled 1 with weight P(b) and 0 with weight P(a); the mirror (a - b) with the labels swapped
    x = sparse.vstack([diff, diff, -diff, -diff]).tocsr()
    y = np.concatenate([np.ones(len(p_b)), np.zeros(len(p_b)), np.zeros(len(p_b)), np.ones(len(p_b))])
    w = np.concatenate([p_b, 1 - p_b, p_b, 1 - p_b])
    keep = w > 0
    clf = LogisticRegression(C=train.C, max_iter=train.max_iter, fit_intercept=False, random_state=seed)
    clf.fit(x[keep], y[keep], sample_weight=w[keep])
    return BowRewardTrained(vectorizer, clf.coef_.ravel().copy())
