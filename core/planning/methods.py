"""Methods beyond one weak/strong pair: grids of model pairs, bootstrapping chains, the strong
baseline and ground-truth early stopping. protocol.Protocol calls these while it builds the DAG.

Grid rule ("weak < strong"): models are ordered by first appearance in `weak` then `strong`
(duplicates, by spec, keep their first position), and a pair runs when the weak model comes
before the strong one. Disjoint lists give every weak x strong pair; a ladder listed in both
(weak = [a, b], strong = [b, c]) gives a->b, a->c, b->c, as the reference sweep.py does for
increasing model sizes. A weak model's stages do not depend on the strong one, so each weak
model is fit once per seed and shared by all its pairs.

Chain M1 -> ... -> Mn: M1 is fit on ground truth on A; step j fits M(j+1) on the labels M(j)
gives on transfer split B_j (fresh B_1..B_(n-1), disjoint; or one shared B with
chain_transfer = "same") and its ceiling on B_j's ground truth. The direct transfer M1 -> Mn
is fit on B_(n-1), the same examples as the last chain step, against the same ceiling.
"""

from __future__ import annotations

from ..api import Model, W2SError, fingerprint
from ..prompting import PromptBaseline
from .stage import Split, Stage


def grid_pairs(weak: list[Model], strong: list[Model]) -> list[tuple[Model, list[Model]]]:
    """Each weak model with the strong models it runs against (see the module docstring)."""
    position: dict[str, int] = {}
    for model in weak + strong:
        position.setdefault(fingerprint(model.spec()), len(position))
    rank = {id(m): position[fingerprint(m.spec())] for m in weak + strong}
    return [(w, [s for s in strong if rank[id(w)] < rank[id(s)]]) for w in weak]


def baseline_model(strong: Model, kind: str, k_shot: int = 4) -> Model | None:
    """The strong model before fine-tuning, fit on A's ground truth (None when it has none).

    prompt: k-shot prompting (demonstrations drawn from A) for prompt-capable models, e.g. causal
    LMs with hf head = "lm" or openai; linear_probe: a linear head on frozen features (encoders),
    fit by logistic regression to convergence when the model has that mode;
    auto: prompt when the model can, else linear_probe when it can, else none.
    """
    if kind == "none":
        return None
    if kind == "prompt" or (kind == "auto" and strong.scores_prompts()):
        if not strong.scores_prompts():
            raise W2SError(f"study.baseline = 'prompt': model {strong.label!r} cannot score prompts (hf: set head = \"lm\"); use 'linear_probe' or 'auto'")
        return strong.prompted(k_shot) or PromptBaseline(strong, k_shot)
    if "linear_probe" not in strong.capabilities:
        if kind == "auto":
            return None
        raise W2SError(f"study.baseline: model {strong.label!r} has no linear_probe mode; use baseline = 'auto' or 'none'")
    # a probe fit to convergence when the model offers one; the strong model's fine-tuning lr and
    # epochs leave a freshly initialised head near chance (0.52 on SST-2 with MiniLM, 500 examples)
    mode = "logistic_regression" if "logistic_regression" in strong.capabilities else "linear_probe"
    train = {**strong.train.model_dump(), "mode": mode}
    model = type(strong)(strong.options.model_dump(), train)
    model.label = f"{strong.label} (pretrained)"
    return model


def plan_chain(p, seed: int, weak_train: Split, test: Split) -> list[tuple[Stage, str, dict]]:
    """Stages of the bootstrapping chain for one seed: every step, the ceilings and the direct transfer (p: the Protocol)."""
    models = p.study.chain
    steps = len(models) - 1
    transfers = p.transfer_splits(seed, steps if p.study.spec.study.chain_transfer == "fresh" else 1)
    transfers = transfers if len(transfers) == steps else transfers * steps
    base = {"task": p.label, "seed": seed}
    first = p.fit_stage("weak", models[0], weak_train, p.ground_truth, None, seed, {**base, "weak": models[0].label, "strong": None, "loss": None})
    first_test = p.predict_stage("weak_test", first, test, seed, first.labels)
    links = [(first, "weak", first.labels), (first_test, "weak_test", first.labels)]
    for loss in p.study.losses:
        supervisor, supervisor_test = first, first_test
        for j, (model, split) in enumerate(zip(models[1:], transfers), 1):
            labels = {**base, "weak": models[j - 1].label, "strong": model.label, "loss": loss.name}
            student, student_test, ceiling_test, step_links = _chain_step(p, supervisor, supervisor_test, model, split, test, loss, seed, labels)
            links += step_links
            supervisor, supervisor_test = student, student_test
        labels = {**base, "weak": models[0].label, "strong": models[-1].label, "loss": loss.name}
        first_labels = p.predict_stage("weak_labels", first, transfers[-1], seed, labels)
        direct = p.fit_stage("student", models[-1], transfers[-1], loss, first_labels, seed, labels)
        direct_test = p.predict_stage("student_test", direct, test, seed, labels)
        evaluate = p.evaluate_stage(first_test, direct_test, ceiling_test, seed, labels, role="chain_direct", chain_test=supervisor_test)
        links += [(first_labels, "weak_labels", labels), (direct, "student", labels), (direct_test, "student_test", labels),
                  (evaluate, "chain_direct", labels)]
    return links


def _chain_step(p, supervisor, supervisor_test, model, split, test, loss, seed, labels):
    """One chain step: the supervisor labels `split`, `model` learns them; its ceiling learns ground truth."""
    weak_labels = p.predict_stage("weak_labels", supervisor, split, seed, labels)
    student = p.fit_stage("student", model, split, loss, weak_labels, seed, labels)
    student_test = p.predict_stage("student_test", student, test, seed, labels)
    ceiling = p.fit_stage("ceiling", model, split, p.ground_truth, None, seed, {**labels, "loss": None})
    ceiling_test = p.predict_stage("ceiling_test", ceiling, test, seed, ceiling.labels)
    evaluate = p.evaluate_stage(supervisor_test, student_test, ceiling_test, seed, labels, role="chain_step")
    links = [(weak_labels, "weak_labels", labels), (student, "student", labels), (student_test, "student_test", labels),
             (ceiling, "ceiling", labels), (ceiling_test, "ceiling_test", labels), (evaluate, "chain_step", labels)]
    return student, student_test, ceiling_test, links
