"""Answers of the openai model: a chat model id asked for one token, its top logprobs renormalised over the labels.

OpenAITrained asks every request concurrently and stores each answer as it arrives (a rerun resumes);
`label_probs` turns top-k logprobs into label probabilities, `balanced_picks` chooses a prompted
baseline's k-shot demonstrations, and `api_errors` turns a rejected key into one line.
"""

from __future__ import annotations

import functools
import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from w2s.api import Example, Trained, W2SError, fingerprint
from w2s_plugins.openai_tokens import label_tokens


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
