"""hf as a reward model on pairwise tasks: a scalar head on the pooled text, scored on each side of a pair.

The reward r(text) is the one-output linear head of a PooledClassifier (mean pooling for encoders,
the last non-pad token for causal LMs, as for classification). For a pair (a, b) the module returns
the logits [r(a), r(b)], so softmax gives P(b preferred) = sigmoid(r(b) - r(a)) (Bradley-Terry) and the
shared loop trains it with any study loss on the pair's two-way distribution.
"""

from __future__ import annotations

import functools

SIDES = ("a", "b")


@functools.cache
def pair_reward_class():
    """PairReward, defined on first use so that importing the plugin does not import torch."""
    import torch

    class PairReward(torch.nn.Module):
        """Wraps a one-output PooledClassifier: (a side, b side) -> [r(a), r(b)]."""

        def __init__(self, scorer):
            super().__init__()
            self.scorer = scorer

        @property
        def backbone(self):
            return self.scorer.backbone

        @property
        def head(self):
            return self.scorer.head

        @property
        def pooling(self):
            return self.scorer.pooling

        def forward(self, a_input_ids, a_attention_mask, b_input_ids, b_attention_mask):
            return torch.cat([self.scorer(a_input_ids, a_attention_mask), self.scorer(b_input_ids, b_attention_mask)], dim=-1)

    return PairReward


def encode_pairs(model, tokenizer, examples, task, ctx=None) -> list[dict]:
    """Each side tokenized alone (cut to max_length): {a_input_ids, a_attention_mask, b_input_ids, b_attention_mask}."""
    sides = {side: model.encode_texts(tokenizer, [e.pair[i] for e in examples], ctx) for i, side in enumerate(SIDES)}
    return [{f"{side}_{k}": v for side in SIDES for k, v in sides[side][j].items()} for j in range(len(examples))]


def collate_pairs(tokenizer):
    """Pad the a sides and the b sides separately."""
    def collate(batch: list[dict]) -> dict:
        out = {}
        for side in SIDES:
            padded = tokenizer.pad([{k[2:]: v for k, v in e.items() if k.startswith(f"{side}_")} for e in batch], return_tensors="pt")
            out.update({f"{side}_{k}": v for k, v in padded.items()})
        return out
    return collate

