"""Fine-tuning jobs of the openai model: launch one per stage key or re-attach to it, poll it, record its events.

The job id is stored (ctx.remember_job) before polling, so a rerun re-attaches; a job the store
missed (crash right after create) is found by its w2s_stage metadata. Metrics events become curves.
"""

from __future__ import annotations

import time

PROVIDER = "openai"
TERMINAL = {"succeeded", "failed", "cancelled"}


def attach_or_launch(model, client, examples, answers, task, ctx):
    """Re-attach to this stage's job (stored, or found by metadata after a crash); else launch one."""
    known = ctx.find_job(PROVIDER)
    if known and known.get("status") not in {"failed", "cancelled"}:
        ctx.echo(f"re-attaching to fine-tuning job {known['job_id']}")
        return client.fine_tuning.jobs.retrieve(known["job_id"])
    orphan = find_orphan(client, ctx.stage_key, known)
    if orphan is not None:
        ctx.remember_job(PROVIDER, orphan.id, job_info(orphan))
        ctx.echo(f"re-attaching to fine-tuning job {orphan.id} (found by its w2s_stage metadata)")
        return orphan
    upload = client.files.create(file=("w2s-train.jsonl", model.training_jsonl(examples, answers, task)), purpose="fine-tune")
    hyper = {k: v for k, v in model.train.model_dump().items() if k != "suffix" and v is not None}
    job = client.fine_tuning.jobs.create(
        model=model.options.model,
        training_file=upload.id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
        seed=ctx.seed,
        suffix=model.train.suffix,
        metadata={"w2s_stage": ctx.stage_key},
    )
    ctx.remember_job(PROVIDER, job.id, job_info(job))
    ctx.echo(f"launched fine-tuning job {job.id} on {model.options.model}")
    return job


def find_orphan(client, stage_key: str, known: dict | None):
    """A live job carrying this stage's metadata that the store missed (crash right after create)."""
    from openai import APIError

    try:
        jobs = client.fine_tuning.jobs.list(metadata={"w2s_stage": stage_key}, limit=20).data
    except APIError:
        return None
    stale = known["job_id"] if known else None
    live = [j for j in jobs if (j.metadata or {}).get("w2s_stage") == stage_key and j.status not in {"failed", "cancelled"} and j.id != stale]
    return live[0] if live else None


def wait(model, client, job, ctx):
    """Poll until the job ends, showing its status; the job id is already stored."""
    bar = ctx.progress(None, total=None, desc=f"fine-tune {job.id}")
    try:
        while job.status not in TERMINAL:
            bar.set_postfix_str(f"{job.status}: {latest_event(client, job.id)}"[:100])
            bar.update(1)
            time.sleep(model.options.poll_seconds)
            job = client.fine_tuning.jobs.retrieve(job.id)
            ctx.remember_job(PROVIDER, job.id, job_info(job))
    except KeyboardInterrupt:
        if model.options.cancel_on_interrupt:
            job = client.fine_tuning.jobs.cancel(job.id)
            ctx.remember_job(PROVIDER, job.id, job_info(job))
            ctx.echo(f"cancelled fine-tuning job {job.id}")
        raise
    finally:
        bar.close()
    ctx.remember_job(PROVIDER, job.id, job_info(job))
    return job


def latest_event(client, job_id: str) -> str:
    events = client.fine_tuning.jobs.list_events(job_id, limit=1).data
    return events[0].message if events else ""


def record_events(client, job_id: str, ctx) -> list[dict]:
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


def job_info(job) -> dict:
    error = getattr(job, "error", None)
    return {"status": job.status, "model": job.model, "fine_tuned_model": job.fine_tuned_model,
            "training_file": job.training_file, "trained_tokens": job.trained_tokens,
            "error": getattr(error, "message", None) if error else None}
