"""Linear-probe mode of the hf model: a linear head on frozen features.

Features are computed once per (model, example) and cached on disk under the store's
artifacts folder (`artifacts/features/<model fingerprint>/`), keyed by the model spec and each
example's id and rendered text. Probe epochs and later predictions read the cache: the encoder
never runs twice on the same example (the reference code re-ran it every step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from filelock import FileLock

from w2s.api import Trained, W2SError, fingerprint
from w2s.train import fit_module, predict_module, seed_everything
from w2s_plugins.hf_loading import portable_path
from w2s_plugins.hf_tokens import encode_inputs

FEATURE_FIELDS = ("path", "gguf_file", "revision", "pooling", "num_layers", "max_length", "dtype")


def feature_spec(model) -> dict:
    """What determines a model's frozen features (not the device, not the training options)."""
    options = model.options.model_dump(mode="json")
    spec = {"model": model.name, "version": model.version, **{k: options.get(k) for k in FEATURE_FIELDS}}
    spec["path"] = portable_path(spec["path"])  # a moved Python environment keeps its cached features
    if model.truncation_side() != "right":  # features of inputs cut on the left differ (the default keeps older caches)
        spec["truncation"] = model.truncation_side()
    if model.options.precision != "fp32":  # bf16 autocast features differ slightly (the default keeps older caches)
        spec["precision"] = model.options.precision
    return spec


class FeatureCache:
    """Frozen features on disk, one entry per (model, example); computes only the missing ones."""

    def __init__(self, root: Path, model):
        self.model = model
        self.folder = Path(root) / "features" / fingerprint(feature_spec(model))
        self.encoder_examples = 0  # how many examples this cache sent through the encoder
        self.tokenizer = None  # loaded to count truncated inputs

    def example_keys(self, examples, task) -> list[str]:
        return [fingerprint([e.id, task.render(e)]) for e in examples]

    def stored(self) -> dict[str, np.ndarray]:
        out = {}
        for path in sorted(self.folder.glob("*.npz")):
            if path.name.endswith(".tmp.npz"):  # being written by another stage right now
                continue
            with np.load(path) as data:
                out.update(zip(data["keys"].tolist(), data["features"]))
        return out

    def features(self, examples, task, ctx=None) -> np.ndarray:
        """(n, hidden) features of `examples`, running the encoder only on uncached ones; with `ctx`, the truncated share."""
        if ctx is not None:
            self.report_truncation(examples, task, ctx)
        keys = self.example_keys(examples, task)
        known = self.stored()
        if any(k not in known for k in keys):
            # Stages side by side (executors processes, ray) often want the same split's features: the
            # first computes them, the others wait on its lock and then read them instead of recomputing.
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(self.folder / f"{fingerprint(keys)}.lock"):
                known = self.stored()
                missing = [i for i, k in enumerate(keys) if k not in known]
                if missing:
                    computed = encode_features(self.model, [examples[i] for i in missing], task)
                    self.encoder_examples += len(missing)
                    self.write([keys[i] for i in missing], computed)
                    known.update(zip((keys[i] for i in missing), computed))
        return np.stack([known[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 0), np.float32)

    def report_truncation(self, examples, task, ctx) -> None:
        """The truncated share of `examples`, from the tokenizer alone (cached features never see one)."""
        from transformers import AutoTokenizer

        if self.tokenizer is None:
            o = self.model.options
            self.tokenizer = AutoTokenizer.from_pretrained(o.path, **({"revision": o.revision} if o.revision else {}),
                                                           **({"gguf_file": o.gguf_file} if o.gguf_file else {}))
        side = self.tokenizer.truncation_side = self.model.truncation_side()
        encode_inputs(self.tokenizer, [task.render(e) for e in examples], self.model.options.max_length, side, ctx)  # cached: shared with the encoder's pass

    def write(self, keys: list[str], features: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = fingerprint(keys)
        tmp = self.folder / f"{name}.{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=np.array(keys), features=features)
        tmp.replace(self.folder / f"{name}.npz")  # atomic: a crash never leaves half a file


def encode_features(model, examples, task) -> np.ndarray:
    """Pooled last-layer features of the frozen backbone, in input order."""
    tokenizer, module = model.build(task.num_labels)
    encoded = model.encode(tokenizer, examples, task)
    pad = model.collate(tokenizer)
    feats = predict_module(_FeatureOnly(module), encoded, model.train, pad, model.device, desc=f"features {model.label}", softmax=False,
                           precision=model.options.precision)
    del module
    return feats.astype(np.float32)


class _FeatureOnly:
    """Adapter so predict_module returns pooled features instead of class probabilities."""

    def __init__(self, module):
        self.module = module

    def eval(self):
        self.module.eval()

    def __call__(self, input_ids, attention_mask):
        return self.module.features(input_ids, attention_mask)


def probe_head(hidden: int, num_labels: int):
    import torch

    class ProbeHead(torch.nn.Module):
        """A linear head over cached features."""

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(hidden, num_labels)

        def forward(self, features):
            return self.linear(features)

    return ProbeHead()


def rows(features: np.ndarray) -> list[dict]:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(features))
    return [{"features": tensor[i]} for i in range(len(features))]


def stack(batch: list[dict]) -> dict:
    import torch

    return {"features": torch.stack([b["features"] for b in batch])}


class ProbeTrained(Trained):
    """A trained probe head; predictions read features from the cache."""

    def __init__(self, head, cache: FeatureCache, owner):
        self.head, self.cache, self.owner = head, cache, owner

    def predict(self, examples, task, ctx=None):
        feats = self.cache.features(list(examples), task, ctx)
        return predict_module(self.head, rows(feats), self.owner.train, stack, self.owner.device)

    def save(self, path: Path):
        import torch

        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), path / "head.pt")
        meta = {"mode": "linear_probe", "hidden": self.head.linear.in_features, "num_labels": self.head.linear.out_features,
                "cache_root": str(self.cache.folder.parent.parent)}
        (path / "w2s.json").write_text(json.dumps(meta))

    def free(self):
        self.head = None


def fit_probe(model, examples, soft_targets, loss, task, ctx) -> ProbeTrained:
    """Train a linear head on cached frozen features (optionally with GT early stopping on ctx.validation)."""
    cache = FeatureCache(Path(ctx.artifact_dir).parent, model)
    feats = cache.features(list(examples), task, ctx)
    seed_everything(ctx.seed)
    head = probe_head(feats.shape[1], task.num_labels).to(model.device)
    if model.train.mode == "logistic_regression":
        set_linear(head.linear, *logistic_regression(feats, np.asarray(soft_targets, dtype=float)))
        return ProbeTrained(head, cache, model)
    evaluate, every = None, 0
    validation = ctx.validation
    if validation is not None:
        val_feats, val_labels = rows(cache.features(list(validation.examples), task)), np.asarray(validation.labels)
        every = validation.eval_every
        evaluate = lambda: float((predict_module(head, val_feats, model.train, stack, model.device).argmax(1) == val_labels).mean())
    fit_module(head, rows(feats), np.asarray(soft_targets), loss, model.train, stack, ctx, model.device,
               desc=f"probe {model.label}", evaluate=evaluate, eval_every=every)
    return ProbeTrained(head, cache, model)


def logistic_regression(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, hidden) weights and (K,) biases of an L2 logistic regression (scikit-learn, L-BFGS, to convergence).

    Soft targets are exact: each example appears once per class, weighted by that class's probability,
    so the fitted objective is the soft-label cross-entropy. Softmax of the returned logits = predict_proba.
    """
    from sklearn.linear_model import LogisticRegression

    n, k = targets.shape
    x, y, w = np.repeat(features, k, axis=0), np.tile(np.arange(k), n), targets.reshape(-1)
    keep = w > 0
    present = np.unique(y[keep])
    if len(present) < 2:
        raise W2SError(f"logistic_regression: the targets put all their mass on class {int(present[0])}; a probe needs two classes")
    clf = LogisticRegression(max_iter=2000).fit(x[keep], y[keep], sample_weight=w[keep])
    weight, bias = np.zeros((k, features.shape[1])), np.full(k, -1e4)  # a class with no mass gets no probability
    if len(clf.classes_) == 2:  # one decision function: sigmoid(b - a) = softmax([a, b])[1]
        weight[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
        bias[clf.classes_[0]] = 0.0
    else:
        weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    return weight, bias


def set_linear(linear, weight: np.ndarray, bias: np.ndarray) -> None:
    import torch

    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))


def load_probe(model, path: Path) -> ProbeTrained:
    import torch

    meta = json.loads((Path(path) / "w2s.json").read_text())
    head = probe_head(meta["hidden"], meta["num_labels"])
    head.load_state_dict(torch.load(Path(path) / "head.pt", map_location="cpu"))
    return ProbeTrained(head.to(model.device), FeatureCache(Path(meta["cache_root"]), model), model)
