"""A local stand-in for the OpenAI REST API (the subset the `openai` plugin uses), for offline tests.

It runs stdlib http.server in a thread on 127.0.0.1 and a random port, and is driven by the real
`openai` client through base_url. Every request is logged. Tests can inject 429/500 responses,
make fine-tuning jobs fail or stay "running" until released, and hold chat completions after N
answers (to kill a client mid-inference).
"""

from __future__ import annotations

import email.parser
import itertools
import json
import math
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

POSITIVE, NEGATIVE = {"good", "great", "fun", "fine"}, {"awful", "bad", "boring", "dull"}


class FakeOpenAI:
    """State and knobs of the fake server; `url` is the base_url to give the client."""

    def __init__(self, api_key: str = "sk-fake-test-key"):
        self.api_key = api_key
        self.log: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.events: dict[str, list[dict]] = {}
        self.polls: dict[str, int] = {}
        self.injected: list[tuple[str, int]] = []  # (path prefix, status), consumed in order
        self.job_outcome = "succeeded"  # or "failed"
        self.fail_message = "The job failed due to an invalid training file. Expected file to have JSONL format."
        self.job_polls = 1  # retrieves before a job can finish
        self.jobs_released = threading.Event()
        self.jobs_released.set()
        self.hold_chat_after: int | None = None  # answer this many chat requests, then hold the rest
        self.chat_released = threading.Event()
        self.drop_tokens: set[str] = set()  # tokens never returned in top_logprobs
        self.agreement: dict[str, float] = {}  # fine-tuned model -> how often its training labels matched the rule
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.jobs_released.set()
        self.chat_released.set()
        self._server.shutdown()
        self._server.server_close()

    # -- knobs and queries ---------------------------------------------------------
    def inject(self, path_prefix: str, *statuses: int) -> None:
        """The next requests under `path_prefix` get these error statuses, one each."""
        self.injected += [(path_prefix, s) for s in statuses]

    def abandon_held(self) -> None:
        """After killing a client: its held requests are dropped unanswered, then new ones flow again."""
        with self._lock:
            for entry in self.log:
                if entry.get("held") and not entry["answered"]:
                    entry["abandoned"] = True
        self.hold_chat_after = None
        self.chat_released.set()

    def requests(self, method: str | None = None, path: str | None = None, answered: bool | None = None) -> list[dict]:
        return [r for r in self.log if (method is None or r["method"] == method) and (path is None or r["path"].startswith(path))
                and (answered is None or r["answered"] == answered)]

    def chat_prompts(self, answered: bool | None = True) -> list[str]:
        """The last user message of every (answered) chat completion request, in arrival order."""
        return [r["body"]["messages"][-1]["content"] for r in self.requests("POST", "/v1/chat/completions", answered) if r["status"] == 200]

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    # -- behaviour -----------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body, headers) -> tuple[int, dict]:
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        with self._lock:
            for i, (prefix, status) in enumerate(self.injected):
                if path.startswith(prefix):
                    del self.injected[i]
                    return status, _error(f"injected {status}", "server_error" if status >= 500 else "rate_limit_exceeded", None)
        parts = path.rstrip("/").split("/")[2:]  # after /v1
        route = (method, parts[0], len(parts))
        if route == ("POST", "files", 1):
            return 200, self.create_file(body)
        if route == ("POST", "chat", 2):
            return 200, self.chat(body)
        if parts[:2] == ["fine_tuning", "jobs"]:
            return self.fine_tuning(method, parts[2:], query, body)
        return 404, _error(f"no route {method} {path}", "invalid_request_error", None)

    def create_file(self, form: dict) -> dict:
        file_id = self.new_id("file")
        self.files[file_id] = form["file"]
        return {"id": file_id, "object": "file", "bytes": len(form["file"]), "created_at": int(time.time()),
                "filename": form.get("filename", "upload.jsonl"), "purpose": form.get("purpose", ""), "status": "processed"}

    def fine_tuning(self, method: str, rest: list[str], query: dict, body) -> tuple[int, dict]:
        if method == "POST" and not rest:
            return 200, self.create_job(body)
        if method == "GET" and not rest:
            wanted = {k[len("metadata["):-1]: v[0] for k, v in query.items() if k.startswith("metadata[")}
            jobs = [j for j in self.jobs.values() if all((j["metadata"] or {}).get(k) == v for k, v in wanted.items())]
            return 200, {"object": "list", "data": jobs[::-1], "has_more": False}
        job = self.jobs.get(rest[0])
        if job is None:
            return 404, _error(f"no fine-tuning job {rest[0]}", "invalid_request_error", None)
        if method == "GET" and len(rest) == 1:
            return 200, self.advance(job)
        if method == "GET" and rest[1:] == ["events"]:
            return 200, {"object": "list", "data": self.events[job["id"]][::-1], "has_more": False}
        if method == "POST" and rest[1:] == ["cancel"]:
            job["status"] = "cancelled"
            self.event(job, "Fine-tuning job cancelled")
            return 200, job
        return 404, _error("no such route", "invalid_request_error", None)

    def create_job(self, body: dict) -> dict:
        if body.get("training_file") not in self.files:
            raise ValueError(f"training_file {body.get('training_file')} was never uploaded")
        job_id = self.new_id("ftjob")
        hyper = (body.get("method") or {}).get("supervised", {}).get("hyperparameters", {})
        self.jobs[job_id] = {
            "id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()), "model": body["model"],
            "fine_tuned_model": None, "organization_id": "org-fake", "result_files": [], "status": "validating_files",
            "validation_file": None, "training_file": body["training_file"], "trained_tokens": None, "error": None,
            "finished_at": None, "seed": body.get("seed"), "metadata": body.get("metadata"), "method": body.get("method"),
            "hyperparameters": {"n_epochs": hyper.get("n_epochs", 3), "batch_size": hyper.get("batch_size", 1),
                                "learning_rate_multiplier": hyper.get("learning_rate_multiplier", 1.8)},
            "user_provided_suffix": body.get("suffix"),
        }
        self.polls[job_id] = 0
        self.events[job_id] = []
        self.event(self.jobs[job_id], f"Created fine-tuning job: {job_id}")
        return self.jobs[job_id]

    def advance(self, job: dict) -> dict:
        """Each retrieve moves the job along; it ends after `job_polls` retrieves once jobs are released."""
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        self.polls[job["id"]] += 1
        if job["status"] == "validating_files":
            job["status"] = "running"
            self.event(job, "Fine-tuning job started")
        if self.polls[job["id"]] < self.job_polls or not self.jobs_released.is_set():
            return job
        if self.job_outcome == "failed":
            job.update(status="failed", error={"code": "invalid_training_file", "message": self.fail_message, "param": "training_file"})
            self.event(job, self.fail_message, level="error")
            return job
        lines = self.files[job["training_file"]].decode().splitlines()
        for step in range(1, 6):
            self.event(job, f"Step {step}/5", kind="metrics",
                       data={"step": step, "train_loss": round(1.0 / step, 4), "train_mean_token_accuracy": round(0.5 + step / 12, 4)})
        job.update(status="succeeded", fine_tuned_model=f"ft:{job['model']}:fake-org:{job['user_provided_suffix']}:{job['id'][-6:]}",
                   trained_tokens=sum(len(l) for l in lines) // 4, finished_at=int(time.time()))
        self.agreement[job["fine_tuned_model"]] = self.label_agreement(lines)
        self.event(job, "The job has successfully completed")
        return job

    def event(self, job: dict, message: str, kind: str = "message", data: dict | None = None, level: str = "info") -> None:
        self.events[job["id"]].append({"id": self.new_id("ftevent"), "object": "fine_tuning.job.event", "created_at": int(time.time()),
                                       "level": level, "message": message, "type": kind, "data": data or {}})

    def chat(self, body: dict) -> dict:
        messages = body["messages"]
        choices = _choices(messages[0]["content"])
        scores = self.score(body["model"], choices, messages[-1]["content"])
        top = sorted(scores.items(), key=lambda kv: -kv[1])
        top = [(t, lp) for t, lp in top if t not in self.drop_tokens][: body.get("top_logprobs") or 0]
        answer = top[0][0] if top else choices[0]
        entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
        return {"id": self.new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": answer},
                             "logprobs": {"content": [{"token": answer, "logprob": top[0][1] if top else 0.0,
                                                       "bytes": list(answer.encode()), "top_logprobs": entries}]}}],
                "usage": {"prompt_tokens": sum(len(m["content"]) // 4 for m in messages), "completion_tokens": 1, "total_tokens": 0}}

    def label_agreement(self, lines: list[str]) -> float:
        """How often a training file's answers agree with what the rule (reading negation) says."""
        rows = [json.loads(l)["messages"] for l in lines if l.strip()]
        hits = [rule_pick(_choices(m[0]["content"]), m[-2]["content"], True)[0] == _choices(m[0]["content"]).index(m[-1]["content"])
                for m in rows]
        return sum(hits) / max(len(hits), 1)

    def score(self, model: str, choices: list[str], text: str) -> dict[str, float]:
        """Logprobs of the answer tokens: a word-list sentiment rule; fine-tuned models also read negation.

        A fine-tuned model inherits half of its training labels' disagreement with the rule: it
        flips a stable (1 - agreement) / 2 share of its answers, so weak labels give a weaker student.
        """
        from w2s_plugins.openai_api import encoding

        enc = encoding("o200k_base")
        firsts = [enc.decode([enc.encode(c)[0]]) for c in choices]
        pick, confidence = rule_pick(choices, text, model.startswith("ft:"))
        flip_share = (1 - self.agreement.get(model, 1.0)) / 2
        if len(choices) == 2 and zlib.crc32(b"flip" + text.encode()) % 1000 < flip_share * 1000:
            pick = 1 - pick
        rest = (1 - confidence) * 0.8 / max(len(choices) - 1, 1)
        scores = {tok: math.log(confidence if i == pick else rest) for i, tok in enumerate(firsts)}
        scores[firsts[pick].capitalize()] = math.log((1 - confidence) * 0.1)  # a case variant: summed by the plugin
        scores.update({"The": math.log(0.05 * (1 - confidence)), "\n": math.log(0.05 * (1 - confidence))})
        return scores


def rule_pick(choices: list[str], text: str, reads_negation: bool) -> tuple[int, float]:
    """The fake model's answer index and confidence for a prompt."""
    words = text.lower().replace(".", " ").split()
    vote = sum((w in POSITIVE) - (w in NEGATIVE) for w in words)
    if vote and reads_negation and "not" in words:
        vote = -vote
    if vote and len(choices) == 2:
        return int(vote > 0), (0.9 if reads_negation else 0.7)
    return zlib.crc32(text.encode()) % len(choices), 0.6  # no sentiment words (other tasks): stable pseudo-random


def _choices(system: str) -> list[str]:
    """The label words the plugin lists in its system message: '... one word: a or b.'"""
    tail = system.rsplit(":", 1)[-1].strip().rstrip(".")
    return [c.strip() for c in tail.split(" or ")]


def _error(message: str, kind: str, code) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _parse_multipart(content_type: str, raw: bytes) -> dict:
    msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    form = {}
    for part in msg.get_payload():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        form[name] = payload if name == "file" else payload.decode()
        if name == "file":
            form["filename"] = part.get_filename()
    return form


def _handler(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _serve(self, method: str):
            url = urlparse(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ctype = self.headers.get("Content-Type", "")
            body = _parse_multipart(ctype, raw) if ctype.startswith("multipart/") else (json.loads(raw) if raw else {})
            entry = {"method": method, "path": url.path, "body": body if not isinstance(body, dict) or "file" not in body
                     else {k: v for k, v in body.items() if k != "file"}, "status": None, "answered": False, "time": time.time()}
            with fake._lock:
                fake.log.append(entry)
                answered_chats = sum(1 for r in fake.log if r["path"] == "/v1/chat/completions" and r["answered"] and r["status"] == 200)
            if method == "POST" and url.path == "/v1/chat/completions" and fake.hold_chat_after is not None \
                    and answered_chats >= fake.hold_chat_after:
                entry["held"] = True
                fake.chat_released.wait(timeout=60)
                if entry.get("abandoned"):  # its client was killed while held: never answered
                    self.close_connection = True
                    return
            try:
                status, payload = fake.handle(method, url.path, parse_qs(url.query), body, self.headers)
            except Exception as exc:  # a bad request from the plugin: surface it as the API would
                status, payload = 400, _error(f"{type(exc).__name__}: {exc}", "invalid_request_error", None)
            entry["status"] = status
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status in (429, 500, 502, 503):
                    self.send_header("retry-after-ms", "5")  # the real client honours this: tiny backoff in tests
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                entry["answered"] = True
            except OSError:  # the client went away (killed mid-request)
                pass

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

    return Handler
