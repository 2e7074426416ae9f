"""Model openai: GPT models fine-tuned and queried through the OpenAI API (or a compatible server).

Fine-tuning writes chat JSONL (system, user = the task's prompt, assistant = the label word), uploads
it, launches one job per stage key (its id is stored before polling; a rerun re-attaches), and
stores the job's train loss/accuracy as curves. Inference asks for one token with top logprobs and
renormalises over the label words' first tokens; each answer is stored as it arrives.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import struct
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from w2s import plugins
from w2s.api import Example, Model, Options, Trained, W2SError, fingerprint
from w2s.api import Options as PluginOptions
from w2s.hookspecs import hookimpl
from w2s.keys import get_key

PROVIDER = "openai"
TERMINAL = {"succeeded", "failed", "cancelled"}
DEFAULT_SYSTEM = "You are a careful classifier. Read the input and answer with exactly one word: {choices}."
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
QUICKTOK_VOCABS = {"o200k_base": "o200k.vocab", "cl100k_base": "cl100k.vocab"}
# Options that change how a stage runs, never what it computes: kept out of stage keys.
OPERATIONAL = {"max_concurrency", "max_retries", "request_timeout", "poll_seconds", "cancel_on_interrupt",
               "estimate_epochs", "price_train_per_1m", "price_input_per_1m", "price_output_per_1m",
               "price_ft_input_per_1m", "price_ft_output_per_1m"}


# -- tokens ------------------------------------------------------------------
def _tiktoken_cache_dir() -> str:
    return os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "data-gym-cache")))


def install_encoding_from_quicktok(name: str) -> bool:
    """Offline: rebuild tiktoken's BPE file from the quicktok wheel into tiktoken's cache.

    tiktoken itself checks the file against its pinned sha256, so a wrong file is never used.
    """
    cache_dir = _tiktoken_cache_dir()
    if name not in QUICKTOK_VOCABS or not cache_dir:
        return False
    try:
        import quicktok
    except ImportError:
        return False
    blob = (Path(quicktok.__file__).parent / "data" / QUICKTOK_VOCABS[name]).read_bytes()
    (count,), offset, lines = struct.unpack_from("<I", blob, 0), 4, []
    for _ in range(count):
        (size,) = struct.unpack_from("<H", blob, offset)
        token = blob[offset + 2 : offset + 2 + size]
        (rank,) = struct.unpack_from("<I", blob, offset + 2 + size)
        offset += 6 + size
        lines.append(b"%s %d" % (base64.b64encode(token), rank))
    os.makedirs(cache_dir, exist_ok=True)
    key = hashlib.sha1(TIKTOKEN_URL.format(name=name).encode()).hexdigest()
    Path(cache_dir, key).write_bytes(b"\n".join(lines) + b"\n")
    return True


@functools.cache
def encoding(name: str):
    """A tiktoken encoding; offline, rebuilt from quicktok's bundled (hash-checked) vocab."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        if install_encoding_from_quicktok(name):
            try:
                return tiktoken.get_encoding(name)
            except Exception:
                pass
        raise W2SError(
            f"tiktoken could not load encoding {name!r} ({type(exc).__name__}); go online once, "
            f"set TIKTOKEN_CACHE_DIR to a folder holding it, or `pip install quicktok-v1`"
        ) from None


def encoding_name(model: str) -> str:
    import tiktoken

    base = model.split(":")[1] if model.startswith("ft:") else model
    try:
        return tiktoken.encoding_name_for_model(base)
    except KeyError:
        return "o200k_base"


def chat_tokens(enc, messages: list[dict], reply_priming: bool = True) -> int:
    """Tokens of a chat request, counted as in OpenAI's cookbook (3 per message, 3 to prime the reply)."""
    total = sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages)
    return total + (3 if reply_priming else 0)


def label_tokens(enc, label_words) -> list[str]:
    """First token of each label word; an error if two labels share it (only one token is scored)."""
    firsts = [enc.decode([enc.encode(w)[0]]) for w in label_words]
    seen: dict[str, str] = {}
    for word, tok in zip(label_words, firsts):
        norm = tok.strip().lower()
        if norm in seen:
            raise W2SError(
                f"label words {seen[norm]!r} and {word!r} share the first token {tok!r} ({enc.name}); the openai "
                f"model scores one answer token, so the task needs label words whose first tokens differ"
            )
        seen[norm] = word
    return firsts


def label_probs(top: list[tuple[str, float]], tokens: list[str], floor: float | None) -> tuple[list[float], int]:
    """Renormalise top-k logprobs over the label tokens (case/space-insensitive); returns probs, #missing.

    A label token absent from the top-k gets `floor`, by default the lowest returned logprob: an
    upper bound on its true probability.
    """
    logps = []
    for tok in tokens:
        hits = [lp for t, lp in top if t.strip().lower() == tok.strip().lower()]
        logps.append(float(np.logaddexp.reduce(hits)) if hits else None)
    missing = sum(lp is None for lp in logps)
    fill = floor if floor is not None else (min(lp for _, lp in top) if top else 0.0)
    values = np.array([fill if lp is None else lp for lp in logps])
    probs = np.exp(values - values.max())
    return (probs / probs.sum()).tolist(), missing


def api_errors(method):
    """Turn a rejected key (401) into one line; the server's message, which may quote the key, is dropped."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        from openai import AuthenticationError

        try:
            return method(*args, **kwargs)
        except AuthenticationError:
            raise W2SError("the OpenAI API rejected the key (401); check OPENAI_API_KEY or run `w2s keys set openai`") from None

    return wrapper


def balanced_picks(answers: np.ndarray, k: int, seed: int) -> list[int]:
    """Indices of k demonstrations, their answers as balanced as the labels allow, in a seeded order."""
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(answers == y))) for y in np.unique(answers)]
    picks: list[int] = []
    while len(picks) < min(k, len(answers)):
        for queue in queues:
            if queue and len(picks) < k:
                picks.append(int(queue.pop()))
    return [picks[i] for i in rng.permutation(len(picks))]


# -- the model ---------------------------------------------------------------
class OpenAITrained(Trained):
    """A fine-tuned (or base, prompted) chat model id, plus the few-shot examples of a prompted baseline."""

    def __init__(self, model_id: str, owner: "OpenAIModel", shots: list[tuple[Example, int]] = (), job: dict | None = None,
                 events: list[dict] = ()):
        self.model_id = model_id
        self.owner = owner
        self.shots = list(shots)
        self.job = job or {}
        self.events = list(events)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        shots = [{"id": e.id, "text": e.text, "label": e.label, "meta": e.meta, "answer": int(a)} for e, a in self.shots]
        (path / "model.json").write_text(json.dumps({"model": self.model_id, "job": self.job, "shots": shots}, indent=2))
        (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in self.events))

    def ask(self, client, messages: list[dict]) -> list[tuple[str, float]]:
        """One chat completion: max_tokens=1, temperature 0, the top-k logprobs of the answer token."""
        response = client.chat.completions.create(
            model=self.model_id,
            messages=messages,
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=self.owner.options.top_logprobs,
            seed=0,
        )
        choice = response.choices[0]
        content = (choice.logprobs.content or []) if choice.logprobs else []
        return [(t.token, t.logprob) for t in content[0].top_logprobs] if content else []

    def predict(self, examples, task, ctx=None) -> np.ndarray:
        tokens = label_tokens(self.owner.encoding(), task.label_words)
        requests = [(e.id, self.owner.messages(task, e, self.shots), tokens) for e in examples]
        done = self.answer_all(requests, ctx, (ctx.split if ctx is not None else None) or "predict")
        return np.array([done[e.id] for e in examples], dtype=float)

    def score_many(self, prompts: list[str], choices: list, ctx=None) -> list[np.ndarray]:
        """Log-probabilities of each prompt's choices (cross-task evals): the prompt is the user message."""
        enc = self.owner.encoding()
        requests = [(f"prompt-{fingerprint([self.model_id, p, list(c)])}", self.owner.prompt_messages(p, c), label_tokens(enc, c))
                    for p, c in zip(prompts, choices)]
        done = self.answer_all(requests, ctx, (ctx.split if ctx is not None else None) or "eval")
        return [np.log(np.clip(done[key], 1e-12, None)) for key, _, _ in requests]

    @api_errors
    def answer_all(self, requests: list[tuple[str, list[dict], list[str]]], ctx, split: str) -> dict[str, list[float]]:
        """Ask every (key, messages, label tokens) not already answered; store each answer as it arrives."""
        done = dict(ctx.partial_predictions(split)) if ctx is not None else {}
        todo = [r for r in requests if r[0] not in done]
        counts = {"label_token_missing": 0, "no_label_token": 0}
        if todo:
            client = self.owner.client()
            with ThreadPoolExecutor(self.owner.options.max_concurrency) as pool:
                futures = {pool.submit(self.ask, client, messages): (key, tokens) for key, messages, tokens in todo}
                try:
                    for future in _progress(ctx, as_completed(futures), len(futures), f"ask {self.model_id}"):
                        self.keep(future, futures[future], done, counts, ctx, split)
                except BaseException:  # Ctrl-C or a request that kept failing: keep the answers in flight
                    pool.shutdown(wait=True, cancel_futures=True)
                    for future, item in futures.items():
                        if item[0] not in done and future.done() and not future.cancelled() and future.exception() is None:
                            self.keep(future, item, done, counts, ctx, split)
                    raise
        if ctx is not None:
            for name, value in counts.items():
                ctx.log_metric(split, name, value)
            ctx.log_metric(split, "resumed_predictions", len(requests) - len(todo))
        return done

    def keep(self, future, item: tuple[str, list[str]], done: dict, counts: dict, ctx, split: str) -> None:
        """Turn one answer into label probabilities, count missing label tokens, and store it at once."""
        key, tokens = item
        probs, missing = label_probs(future.result(), tokens, self.owner.options.missing_logprob)
        counts["label_token_missing"] += missing > 0
        counts["no_label_token"] += missing == len(tokens)
        done[key] = probs
        if ctx is not None:
            ctx.save_partial_prediction(split, key, probs)

    def free(self) -> None:
        self.shots = []


def _progress(ctx, iterable, total: int, desc: str):
    return ctx.progress(iterable, total=total, desc=desc) if ctx is not None else iterable


class OpenAIModel(Model):
    """An OpenAI chat model: fine-tuned on (weak) labels via the fine-tuning API, or prompted (zero/k-shot)."""

    name = "openai"
    version = "1"
    description = "OpenAI chat models (or a compatible server): fine-tuning API, or prompted zero/k-shot; label-token logprobs"
    capabilities = frozenset({"finetune", "prompt"})
    aliases = {"gpt-4o-mini": {"model": "gpt-4o-mini-2024-07-18"}}

    class Options(Options):
        model: str = Field(default="gpt-4o-mini-2024-07-18", description="base model to fine-tune or prompt")
        base_url: str | None = Field(default=None, description="an OpenAI-compatible server, e.g. http://localhost:8000/v1")
        finetune: bool = Field(default=True, description="false: a prompted baseline (no fine-tuning job)")
        k_shot: int = Field(default=0, ge=0, le=64, description="prompted baseline: labelled examples shown before each input")
        system_prompt: str = Field(default=DEFAULT_SYSTEM, description="system message; {choices} = the label words")
        soft_labels: Literal["harden", "sample"] = Field(default="harden", description="soft weak labels: argmax, or sampled from the probabilities")
        top_logprobs: int = Field(default=20, ge=1, le=20)
        missing_logprob: float | None = Field(default=None, description="logprob of a label token absent from the top-k (default: lowest top-k logprob)")
        encoding: str | None = Field(default=None, description="tiktoken encoding (default: the model's)")
        max_concurrency: int = Field(default=8, ge=1, le=256)
        max_retries: int = Field(default=8, ge=0, description="retries on 429/5xx/timeouts, with exponential backoff")
        request_timeout: float = Field(default=60.0, gt=0)
        poll_seconds: float = Field(default=30.0, ge=0)
        cancel_on_interrupt: bool = Field(default=False, description="cancel the remote job on Ctrl-C (default: leave it; a rerun re-attaches)")
        estimate_epochs: int = Field(default=3, ge=1, description="epochs assumed by the cost estimate when train.n_epochs is auto")
        price_train_per_1m: float = 3.00  # USD per 1M training tokens (gpt-4o-mini-2024-07-18)
        price_input_per_1m: float = 0.15
        price_output_per_1m: float = 0.60
        price_ft_input_per_1m: float = 0.30
        price_ft_output_per_1m: float = 1.20

    class Train(PluginOptions):
        n_epochs: int | None = Field(default=None, ge=1, le=50, description="default: the API chooses")
        batch_size: int | None = Field(default=None, ge=1)
        learning_rate_multiplier: float | None = Field(default=None, gt=0)
        suffix: str = Field(default="w2s", max_length=40)

    def spec(self) -> dict:
        spec = super().spec()
        spec["options"] = {k: v for k, v in spec["options"].items() if k not in OPERATIONAL}
        return spec

    # -- plumbing ----------------------------------------------------------
    def client(self):
        from openai import OpenAI

        return OpenAI(api_key=get_key("openai", "OPENAI_API_KEY"), base_url=self.options.base_url,
                      max_retries=self.options.max_retries, timeout=self.options.request_timeout)

    def preflight(self) -> None:
        """Fail fast, before any stage runs: the key must be set."""
        get_key("openai", "OPENAI_API_KEY")

    def encoding(self):
        return encoding(self.options.encoding or encoding_name(self.options.model))

    def messages(self, task, example: Example, shots=()) -> list[dict]:
        system = self.options.system_prompt.format(choices=" or ".join(task.label_words))
        out = [{"role": "system", "content": system}]
        for shot, answer in shots:
            out += [{"role": "user", "content": task.render(shot)}, {"role": "assistant", "content": task.label_words[answer]}]
        return out + [{"role": "user", "content": task.render(example)}]

    def prompt_messages(self, prompt: str, choices) -> list[dict]:
        """A ready-made prompt (e.g. a cross-task eval with its own k-shot prefix) as a chat request."""
        system = self.options.system_prompt.format(choices=" or ".join(choices))
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]

    def prompted(self, k_shot: int = 0) -> "OpenAIModel":
        """The pretrained-strong baseline: this model prompted (zero- or k-shot), never fine-tuned."""
        model = type(self)({**self.options.model_dump(), "finetune": False, "k_shot": k_shot}, self.train.model_dump())
        model.label = f"{getattr(self, 'label', self.name)} (pretrained)"
        return model

    def pretrained(self, task) -> OpenAITrained:
        """The base model, prompted zero-shot (cross-task evals of the strong model before training)."""
        return OpenAITrained(self.options.model, self)

    def training_labels(self, soft_targets: np.ndarray, seed: int) -> np.ndarray:
        soft = np.asarray(soft_targets, dtype=float)
        if self.options.soft_labels == "harden":
            return soft.argmax(1)
        rng = np.random.default_rng(seed)
        return np.array([rng.choice(len(row), p=row / row.sum()) for row in soft])

    def training_jsonl(self, examples, answers, task) -> bytes:
        lines = [
            json.dumps({"messages": self.messages(task, e) + [{"role": "assistant", "content": task.label_words[a]}]})
            for e, a in zip(examples, answers)
        ]
        return ("\n".join(lines) + "\n").encode()

    # -- fit -----------------------------------------------------------------
    @api_errors
    def fit(self, examples, soft_targets, loss, task, ctx) -> OpenAITrained:
        answers = self.training_labels(soft_targets, ctx.seed)
        label_tokens(self.encoding(), task.label_words)
        ctx.output.update({"soft_labels": self.options.soft_labels, "label_counts": np.bincount(answers, minlength=task.num_labels).tolist()})
        if not self.options.finetune:
            picks = balanced_picks(answers, self.options.k_shot, ctx.seed)
            return OpenAITrained(self.options.model, self, [(examples[i], int(answers[i])) for i in picks])
        if loss.fn is not plugins.losses()["xent"].obj:
            raise W2SError(f"loss {loss.name!r}: the OpenAI fine-tuning API trains on labels only; use loss xent for openai students")
        client = self.client()
        job = self.attach_or_launch(client, examples, answers, task, ctx)
        job = self.wait(client, job, ctx)
        events = self.record_events(client, job.id, ctx)
        if job.status != "succeeded":
            error = getattr(job, "error", None)
            message = getattr(error, "message", None) or "no error message"
            raise W2SError(f"fine-tuning job {job.id} {job.status}: {message}")
        ctx.output.update({"job_id": job.id, "fine_tuned_model": job.fine_tuned_model, "trained_tokens": job.trained_tokens})
        return OpenAITrained(job.fine_tuned_model, self, job=_job_info(job), events=events)

    def attach_or_launch(self, client, examples, answers, task, ctx):
        """Re-attach to this stage's job (stored, or found by metadata after a crash); else launch one."""
        known = ctx.find_job(PROVIDER)
        if known and known.get("status") not in {"failed", "cancelled"}:
            ctx.echo(f"re-attaching to fine-tuning job {known['job_id']}")
            return client.fine_tuning.jobs.retrieve(known["job_id"])
        orphan = self.find_orphan(client, ctx.stage_key, known)
        if orphan is not None:
            ctx.remember_job(PROVIDER, orphan.id, _job_info(orphan))
            ctx.echo(f"re-attaching to fine-tuning job {orphan.id} (found by its w2s_stage metadata)")
            return orphan
        upload = client.files.create(file=("w2s-train.jsonl", self.training_jsonl(examples, answers, task)), purpose="fine-tune")
        hyper = {k: v for k, v in self.train.model_dump().items() if k != "suffix" and v is not None}
        job = client.fine_tuning.jobs.create(
            model=self.options.model,
            training_file=upload.id,
            method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
            seed=ctx.seed,
            suffix=self.train.suffix,
            metadata={"w2s_stage": ctx.stage_key},
        )
        ctx.remember_job(PROVIDER, job.id, _job_info(job))
        ctx.echo(f"launched fine-tuning job {job.id} on {self.options.model}")
        return job

    def find_orphan(self, client, stage_key: str, known: dict | None):
        """A live job carrying this stage's metadata that the store missed (crash right after create)."""
        from openai import APIError

        try:
            jobs = client.fine_tuning.jobs.list(metadata={"w2s_stage": stage_key}, limit=20).data
        except APIError:
            return None
        stale = known["job_id"] if known else None
        live = [j for j in jobs if (j.metadata or {}).get("w2s_stage") == stage_key and j.status not in {"failed", "cancelled"} and j.id != stale]
        return live[0] if live else None

    def wait(self, client, job, ctx):
        """Poll until the job ends, showing its status; the job id is already stored."""
        bar = ctx.progress(None, total=None, desc=f"fine-tune {job.id}")
        try:
            while job.status not in TERMINAL:
                bar.set_postfix_str(f"{job.status}: {self.latest_event(client, job.id)}"[:100])
                bar.update(1)
                time.sleep(self.options.poll_seconds)
                job = client.fine_tuning.jobs.retrieve(job.id)
                ctx.remember_job(PROVIDER, job.id, _job_info(job))
        except KeyboardInterrupt:
            if self.options.cancel_on_interrupt:
                job = client.fine_tuning.jobs.cancel(job.id)
                ctx.remember_job(PROVIDER, job.id, _job_info(job))
                ctx.echo(f"cancelled fine-tuning job {job.id}")
            raise
        finally:
            bar.close()
        ctx.remember_job(PROVIDER, job.id, _job_info(job))
        return job

    @staticmethod
    def latest_event(client, job_id: str) -> str:
        events = client.fine_tuning.jobs.list_events(job_id, limit=1).data
        return events[0].message if events else ""

    def record_events(self, client, job_id: str, ctx) -> list[dict]:
        """All of the job's events, oldest first; metrics events become curves."""
        events = [e.model_dump(mode="json") for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
        events.sort(key=lambda e: (e.get("created_at") or 0, (e.get("data") or {}).get("step") or 0))
        for event in events:
            data = event.get("data") or {}
            if event.get("type") == "metrics" and "step" in data:
                for source, name in (("train_loss", "train_loss"), ("train_mean_token_accuracy", "train_accuracy"),
                                     ("valid_loss", "valid_loss"), ("valid_mean_token_accuracy", "valid_accuracy")):
                    if data.get(source) is not None:
                        ctx.log_curve(data["step"], name, data[source])
        return events

    def load(self, path, task) -> OpenAITrained:
        meta = json.loads((Path(path) / "model.json").read_text())
        shots = [(Example(s["id"], s["text"], s["label"], meta=s.get("meta") or {}), s["answer"]) for s in meta["shots"]]
        return OpenAITrained(meta["model"], self, shots, job=meta.get("job"))

    # -- cost ----------------------------------------------------------------
    def estimate_cost(self, examples, task, kind: str, k_shot: int = 0) -> dict:
        """Tokens (tiktoken) and USD a fit, predict or eval stage would spend; list prices are options."""
        enc, o = self.encoding(), self.options
        examples = list(examples or [])
        longest = max(task.label_words, key=lambda w: len(enc.encode(w)))
        if kind == "fit":
            if not o.finetune:
                return {"tokens": 0, "usd": 0.0, "what": "prompted baseline: no fine-tuning"}
            per_epoch = sum(chat_tokens(enc, self.messages(task, e) + [{"role": "assistant", "content": longest}], False) for e in examples)
            epochs = self.train.n_epochs or o.estimate_epochs
            return {"tokens": per_epoch * epochs, "usd": per_epoch * epochs * o.price_train_per_1m / 1e6,
                    "what": f"fine-tune: {per_epoch} tokens x {epochs} epochs"}
        if kind not in ("predict", "eval") or not examples:
            return {"tokens": 0, "usd": 0.0, "what": kind}
        if kind == "predict":
            prompts = [chat_tokens(enc, self.messages(task, e)) for e in examples]
            shots = o.k_shot if not o.finetune else 0
        else:
            prompts = [chat_tokens(enc, self.prompt_messages(task.render(e), task.label_words)) for e in examples]
            shots = k_shot
        demo = float(np.mean([len(enc.encode(task.render(e))) for e in examples])) + len(enc.encode(longest)) + 6
        tokens = int(sum(prompts) + len(examples) * shots * demo)
        price_in, price_out = (o.price_ft_input_per_1m, o.price_ft_output_per_1m) if o.finetune else (o.price_input_per_1m, o.price_output_per_1m)
        note = " (fine-tuned prices: an upper bound)" if kind == "eval" and o.finetune else ""
        return {"tokens": tokens, "usd": tokens * price_in / 1e6 + len(examples) * price_out / 1e6,
                "what": f"{len(examples)} one-token completions{f', {shots}-shot' if shots else ''}{note}"}


def _job_info(job) -> dict:
    error = getattr(job, "error", None)
    return {"status": job.status, "model": job.model, "fine_tuned_model": job.fine_tuned_model,
            "training_file": job.training_file, "trained_tokens": job.trained_tokens,
            "error": getattr(error, "message", None) if error else None}


@hookimpl
def register_models(register):
    register(OpenAIModel)
