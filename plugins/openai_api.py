"""Model openai: GPT models fine-tuned and queried through the OpenAI API (or a compatible server).

Fine-tuning writes chat JSONL (system, user = the task's prompt, assistant = the label word), uploads
it, launches one job per stage key (its id is stored before polling; a rerun re-attaches), and
stores the job's train loss/accuracy as curves. Inference asks for one token with top logprobs and
renormalises over the label words' first tokens; each answer is stored as it arrives.
This module holds OpenAIModel (options, prompts, fit, cost estimate) and its entry point; tokens,
answers and fine-tuning jobs are in openai_tokens, openai_answers and openai_jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from w2s import plugins
from w2s.api import Example, Model, Options, W2SError
from w2s.api import Options as PluginOptions
from w2s.hookspecs import hookimpl
from w2s.keys import get_key
from w2s_plugins import openai_jobs
from w2s_plugins.openai_answers import OpenAITrained, api_errors, balanced_picks
from w2s_plugins.openai_tokens import chat_tokens, encoding, encoding_name, label_tokens

DEFAULT_SYSTEM = "You are a careful classifier. Read the input and answer with exactly one word: {choices}."
# Options that change how a stage runs, never what it computes: kept out of stage keys.
OPERATIONAL = {"max_concurrency", "max_retries", "request_timeout", "poll_seconds", "cancel_on_interrupt",
               "estimate_epochs", "price_train_per_1m", "price_input_per_1m", "price_output_per_1m",
               "price_ft_input_per_1m", "price_ft_output_per_1m"}


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
        model.label = f"{self.label} (pretrained)"
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
        job = openai_jobs.attach_or_launch(self, client, examples, answers, task, ctx)
        job = openai_jobs.wait(self, client, job, ctx)
        events = openai_jobs.record_events(client, job.id, ctx)
        if job.status != "succeeded":
            error = getattr(job, "error", None)
            message = getattr(error, "message", None) or "no error message"
            raise W2SError(f"fine-tuning job {job.id} {job.status}: {message}")
        ctx.output.update({"job_id": job.id, "fine_tuned_model": job.fine_tuned_model, "trained_tokens": job.trained_tokens})
        return OpenAITrained(job.fine_tuned_model, self, job=openai_jobs.job_info(job), events=events)

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


@hookimpl
def register_models(register):
    register(OpenAIModel)
