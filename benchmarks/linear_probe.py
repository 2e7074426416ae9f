"""Benchmark: linear probe on minilm-l6 with cached features vs the full forward pass every step.

    python benchmarks/linear_probe.py [--data ../shared/data/sst2] [--n 2000] [--epochs 10]

Both arms train the same linear head (same seed, optimizer, schedule, batches) on n SST-2 train
examples for the given epochs and are scored on test.tsv (872 sentences), side by side in one run:
  cached     hf with train.mode = "linear_probe": the encoder runs once per example, features are
             cached on disk, every epoch reads the cache (w2s);
  reference  the frozen encoder runs inside every training step, as openai/weak-to-strong did in
             its linear-probe mode (the head is the only trainable parameter).
The number of examples sent through the encoder is counted in both arms.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from w2s import plugins
from w2s.train import fit_module, predict_module, seed_everything

ROOT = Path(__file__).resolve().parents[1]


class Context:
    """The minimal StageContext a model's fit needs outside the engine."""

    def __init__(self, folder: Path, seed: int = 0):
        self.seed, self.stage_key, self.validation = seed, "bench", None
        self.artifact_dir = folder / "artifacts" / "bench"
        self.curves = []

    def log_curve(self, step, name, value):
        self.curves.append((step, name, value))


def count_encoder_examples():
    """Patch BertModel.forward to count the examples it encodes; returns the running list."""
    from transformers.models.bert.modeling_bert import BertModel

    seen = []
    forward = BertModel.forward

    def counting(self, input_ids=None, *args, **kwargs):
        seen.append(int(input_ids.shape[0]))
        return forward(self, input_ids, *args, **kwargs)

    BertModel.forward = counting
    return seen


def cached_arm(model, train, targets, test, task, loss, folder):
    start = time.perf_counter()
    trained = model.fit(train, targets, loss, task, Context(folder))
    fit_seconds = time.perf_counter() - start
    probs = trained.predict(test, task)
    return fit_seconds, time.perf_counter() - start, probs


def reference_arm(model, train, targets, test, task, loss):
    """Frozen encoder + head, the encoder re-run on every batch of every epoch."""
    start = time.perf_counter()
    seed_everything(0)
    tokenizer, module = model.build(task.num_labels)
    for p in module.backbone.parameters():
        p.requires_grad_(False)
    encoded = model.encode(tokenizer, train, task)
    fit_module(module, encoded, targets, loss, model.train, model.collate(tokenizer), Context(Path(tempfile.mkdtemp())),
               model.device, parameters=module.head.parameters(), desc="reference probe")
    fit_seconds = time.perf_counter() - start
    probs = predict_module(module, model.encode(tokenizer, test, task), model.train, model.collate(tokenizer), model.device)
    return fit_seconds, time.perf_counter() - start, probs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("W2S_DATA_DIR") or str(ROOT.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "linear_probe.json"))
    args = parser.parse_args()
    task = plugins.make_task("sst2", {}, args.data, "task")
    train = task.load("train")[: args.n]
    test = task.load("test")
    targets = np.eye(2, dtype=np.float32)[[e.label for e in train]]
    loss = plugins.make_loss("xent", {}, "loss")
    hp = {"epochs": args.epochs, "batch_size": 32, "lr": 1e-3, "mode": "linear_probe"}
    model = plugins.make_model("minilm-l6", {"max_length": 64}, hp, "strong")
    seen = count_encoder_examples()
    labels = np.array([e.label for e in test])
    arms = {}
    for name, run in (("cached", lambda: cached_arm(model, train, targets, test, task, loss, Path(tempfile.mkdtemp()))),
                      ("reference", lambda: reference_arm(model, train, targets, test, task, loss))):
        before = sum(seen)
        fit_seconds, total_seconds, probs = run()
        arms[name] = {"fit_seconds": round(fit_seconds, 2), "fit_and_test_seconds": round(total_seconds, 2),
                      "encoder_examples": sum(seen) - before, "test_acc": float((probs.argmax(1) == labels).mean())}
        print(name, arms[name], flush=True)
    out = {
        "benchmark": "linear_probe", "model": "minilm-l6 (all-MiniLM-L6-v2)", "data": args.data, "n_train": len(train),
        "n_test": len(test), "epochs": args.epochs, "batch_size": 32, "arms": arms,
        "fit_speedup": round(arms["reference"]["fit_seconds"] / arms["cached"]["fit_seconds"], 2),
        "note": "encoder_examples counts examples through the encoder, training and test prediction together. "
                "The reference arm keeps dropout on in the frozen encoder during training, as the reference code did.",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
