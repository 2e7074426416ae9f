"""Model bow: bag-of-words logistic regression, a fast weak supervisor that ignores word order."""

import pickle
from pathlib import Path

import numpy as np
from pydantic import Field

from w2s.api import BaseOptions, Model, Options, Trained, is_pairwise
from w2s.hookspecs import hookimpl
from w2s_plugins.bow_reward import BowRewardTrained, fit_bow_reward


class BowTrained(Trained):
    def __init__(self, pipeline, num_labels: int):
        self.pipeline = pipeline
        self.num_labels = num_labels

    def predict(self, examples, task, ctx=None):
        probs = np.zeros((len(examples), self.num_labels))
        classes = self.pipeline.classes_
        probs[:, classes] = self.pipeline.predict_proba([e.text for e in examples])
        return probs

    def parameter_counts(self):
        """Coefficients and intercepts of the logistic regression (its vocabulary is its only 'embedding')."""
        clf = self.pipeline[-1]
        n = int(clf.coef_.size + clf.intercept_.size)
        return {"n_params": n, "n_params_non_embedding": n}

    def save(self, path: Path):
        path.write_bytes(pickle.dumps((self.pipeline, self.num_labels)))


class BowModel(Model):
    """Bag-of-words logistic regression (scikit-learn); soft targets become sample weights."""

    name = "bow"
    version = "1"
    description = "bag-of-words logistic regression (scikit-learn): a fast, weak supervisor"
    capabilities = frozenset({"finetune", "reward"})  # reward: a linear reward over words on pairwise tasks (bow_reward.py)

    class Options(Options):
        ngram_max: int = Field(default=1, ge=1, le=3)
        min_df: int = Field(default=1, ge=1)
        max_features: int | None = Field(default=20000, ge=1)
        binary: bool = True

    class Train(BaseOptions):
        C: float = Field(default=1.0, gt=0)
        max_iter: int = Field(default=1000, ge=10)

    def fit(self, examples, soft_targets, loss, task, ctx):
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        o, t = self.options, self.train
        if is_pairwise(task):
            trained = fit_bow_reward(o, t, examples, np.asarray(soft_targets), ctx.seed)
            ctx.log_curve(1, "train_acc", float((trained.predict(examples, task).argmax(1) == np.asarray(soft_targets).argmax(1)).mean()))
            return trained
        texts = [e.text for e in examples]
        k = soft_targets.shape[1]
        # One weighted copy of each example per class: the logistic loss then equals soft cross-entropy.
        rows = [(text, c, soft_targets[i, c]) for i, text in enumerate(texts) for c in range(k) if soft_targets[i, c] > 0]
        x, y, w = zip(*rows)
        pipeline = make_pipeline(
            CountVectorizer(ngram_range=(1, o.ngram_max), min_df=o.min_df, max_features=o.max_features, binary=o.binary),
            LogisticRegression(C=t.C, max_iter=t.max_iter, random_state=ctx.seed),
        )
        pipeline.fit(list(x), np.array(y), logisticregression__sample_weight=np.array(w))
        trained = BowTrained(pipeline, task.num_labels)
        train_acc = float((trained.predict(examples, task).argmax(1) == soft_targets.argmax(1)).mean())
        ctx.log_curve(1, "train_acc", train_acc)
        return trained

    def load(self, path, task):
        saved = pickle.loads(Path(path).read_bytes())
        if saved[0] == "reward":
            return BowRewardTrained(*saved[1:])
        pipeline, num_labels = saved
        return BowTrained(pipeline, num_labels)


@hookimpl
def register_models(register):
    register(BowModel)
