"""`feature_extraction`'s settings: how the frozen backbone's features are pooled, cached, and
how the head is fitted. `contrastive` trains its head on features too, so it lists this class.
Imports only the settings machinery, so the keys a strategy declares are read without
importing its model code."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.settings import check, check_choice, setting

POOLING_NAMES = ("auto", "cls", "mean", "pooler", "last")
HEAD_KINDS = ("auto", "linear", "logistic")


@dataclass
class FeatureSettings:
    """The strategies that train a head on a frozen backbone's features: how the features are
    pooled, cached, and how the head is fitted."""

    pooling: str = setting(
        "feature_extraction: how the frozen backbone's outputs become one vector: auto | cls | mean | pooler | last. "
        "auto = mean over tokens/frames/pixels (safe when the pooler is untrained), and the last real token for "
        "decoder language models (GPT-2, Llama), whose last token has read the whole input.",
        default="auto",
    )
    weighted_layer_sum: bool = setting(
        "feature_extraction: pool every hidden layer and train a softmax-weighted sum of them with the head "
        "(as SUPERB does for speech models) instead of reading the last layer alone.",
        default=False,
    )
    cache: bool = setting("feature_extraction: cache the frozen backbone's features on disk.", default=True)
    head: str = setting(
        "feature_extraction / contrastive: how the linear head is trained. linear: by the Trainer, for "
        "training.num_train_epochs | logistic: fitted in closed form, a logistic regression with its L2 strength "
        "chosen by cross-validation (seconds; best with few labels) | auto: logistic for contrastive, linear otherwise.",
        default="auto",
    )

    def __post_init__(self) -> None:
        check_choice(self.pooling, POOLING_NAMES, "strategy.pooling", "pooling")
        check_choice(self.head, HEAD_KINDS, "strategy.head", "head")
        check(
            not (self.weighted_layer_sum and self.pooling == "pooler"),
            "strategy.weighted_layer_sum",
            "pools every hidden layer with strategy.pooling mean or cls; the pooler reads the last layer only",
        )
