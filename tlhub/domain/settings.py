"""The `domain_adaptation` section of a run's config: which method, its weights and schedule,
the target data, and DAPT's settings. Validated here, as every section is."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.errors import closest
from tlhub.settings import check, setting

# Methods with a loss on target batches during training (dapt and source_only have none).
LOSS_METHODS = ("mcc", "self_training", "dann", "cdan", "coral", "mmd")
DOMAIN_METHODS = ("dann", "cdan", "mcc", "self_training", "coral", "mmd", "dapt", "source_only")
# A method's domain-loss weight when domain_adaptation.weight is null (the rest: 1). DANN, CDAN
# and MMD at 0.3: at 1 the reversed gradient kept MiniLM's task loss near log 2 and cost DANN 2
# points on Amazon -> Yelp; with LoRA there, CDAN's stayed at log 2 for the whole run (0.606 mean,
# one seed predicting one class) and MMD lost 5.6 points (seed 2: 0.500 and 0.750 at 1, 0.886 and
# 0.893 at 0.3, source-only 0.893).
DOMAIN_WEIGHTS = {"dann": 0.3, "cdan": 0.3, "mmd": 0.3}
# domain_adaptation.method: auto, per modality: the method that gained most at its defaults on the
# real shifts measured (docs/benchmarks.md). Self-training on images and speech (+36 and +11
# points); mcc on text: level with self-training on Amazon -> Yelp, and on the wider Amazon ->
# film critics shift +1.7 on every seed where self-training swung from -1.8 to +1.7.
AUTO_DOMAIN_METHODS = {"text": "mcc", "image": "self_training", "audio": "self_training"}
DOMAIN_SCHEDULES = ("ramp", "constant")


@dataclass
class DaptSettings:
    epochs: float = setting("Epochs of masked-LM continued pretraining over the target text.", default=1.0)
    max_steps: int | None = setting("Stop continued pretraining after this many steps (overrides epochs).", default=None)
    learning_rate: float = setting("Learning rate of continued pretraining.", default=5.0e-5)
    mlm_probability: float = setting("Fraction of tokens masked, as in BERT.", default=0.15)
    batch_size: int = setting("Batch size of continued pretraining.", default=16)
    include_source_text: bool = setting(
        "Also pretrain on the source text (task-adaptive + domain-adaptive); false: target text only (DAPT).",
        default=False,
    )

    def __post_init__(self) -> None:
        check(self.epochs > 0, "domain_adaptation.dapt.epochs", f"must be positive, got {self.epochs}")
        check(self.max_steps is None or self.max_steps > 0, "domain_adaptation.dapt.max_steps", f"must be positive or null, got {self.max_steps}")
        check(self.learning_rate > 0, "domain_adaptation.dapt.learning_rate", f"must be positive, got {self.learning_rate}")
        check(0.0 < self.mlm_probability < 1.0, "domain_adaptation.dapt.mlm_probability", f"must be between 0 and 1, got {self.mlm_probability}")
        check(self.batch_size > 0, "domain_adaptation.dapt.batch_size", f"must be positive, got {self.batch_size}")


@dataclass
class DomainAdaptationConfig:
    target: str = setting(
        "Target-domain data like data.train (file, folder or Hub id). Labels are not needed; rows that have them "
        "are used only to report accuracy on the target (source-only vs adapted), never to train."
    )
    method: str = setting(
        "auto (mcc for text, self_training for image and audio: what measured best on each) | "
        "self_training (a teacher's confident, class-balanced target predictions become labels for a second "
        "training; two runs) | mcc (Minimum Class Confusion on the target predictions; one run, no extra network) | "
        "dann (gradient reversal + domain classifier) | cdan (dann conditioned on the predictions, entropy-weighted) "
        "| coral | mmd (feature alignment losses) | dapt (text: masked-LM continued pretraining on the target, then "
        "fine-tuning) | source_only (no adaptation; the baseline, still reporting target accuracy). Measured per "
        "modality in docs/benchmarks.md.",
        default="auto",
    )
    weight: float | None = setting(
        "Weight of the domain loss added to the task loss; null: the method's own, 0.3 for dann, cdan and mmd (at 1 "
        "they kept a pretrained text encoder from learning the task, docs/benchmarks.md), 1 for the others.",
        default=None,
    )
    schedule: str = setting(
        "ramp: the domain term grows as 2/(1+exp(-gamma*p))-1 with training progress p (Ganin et al. 2016; for dann "
        "it scales the reversed gradient, for coral/mmd the loss); constant: full strength from the first step.",
        default="ramp",
    )
    ramp_gamma: float = setting("gamma of the ramp (10 in the DANN paper).", default=10.0)
    pooling: str = setting(
        "How the backbone's last hidden states become the aligned feature vector: auto (= mean) | mean | cls.",
        default="auto",
    )
    discriminator_hidden: int = setting(
        "dann/cdan: width of the domain classifier's bounded bottleneck (linear + layer norm + ReLU).", default=256
    )
    discriminator_lr_multiplier: float = setting(
        "dann/cdan: the domain classifier's learning rate is the run's times this (10, as TLlib's).", default=10.0
    )
    mcc_temperature: float = setting("mcc: softmax temperature of the target predictions (2.5 in the paper).", default=2.5)
    pseudo_label_threshold: float = setting(
        "self_training: a target row is trained on with its predicted class when that class's probability is at least this.",
        default=0.9,
    )
    self_training_rounds: int = setting(
        "self_training: after the run with its own online pseudo-labels (the teacher, in OUTPUT_DIR/teacher), train a "
        "fresh model this many times, each also on the previous model's most confident target rows with its labels "
        "(class-balanced, as CBST); each round is one more training run. 0: the online pseudo-labels alone.",
        default=1,
    )
    pseudo_label_fraction: float = setting(
        "self_training rounds: the share of each predicted class's target rows, most confident first, that the "
        "next model trains on with the teacher's label.",
        default=0.5,
    )
    target_split: str = setting(
        "Split of a Hub target dataset, or of an image folder with train/ and val/ (or test/) folders.", default="train"
    )
    text_column: str | None = setting("Target's text column; null: data.text_column.", default=None)
    image_column: str | None = setting("Target's image column; null: data.image_column.", default=None)
    audio_column: str | None = setting("Target's audio column; null: data.audio_column.", default=None)
    label_column: str | None = setting(
        "Target's label column, read only for evaluation; null: data.label_column if the target has it.", default=None
    )
    max_target_samples: int | None = setting("Use at most this many target rows (seeded sample).", default=None)
    compare_source_only: bool = setting(
        "When the target has labels, also train the same run without adaptation (OUTPUT_DIR/source_only) and "
        "report both target accuracies side by side.",
        default=True,
    )
    dapt: DaptSettings = setting("Settings of method: dapt.", default_factory=DaptSettings)

    @property
    def loss_weight(self) -> float:
        """`weight`, or the method's own where it is null (resolved here, not stored: `tlhub
        compare --methods` swaps the method of one config)."""
        return self.weight if self.weight is not None else DOMAIN_WEIGHTS.get(self.method, 1.0)

    def __post_init__(self) -> None:
        check(bool(self.target), "domain_adaptation.target", "must name the target data (a file, folder or Hub id)")
        check(
            self.method in ("auto", *DOMAIN_METHODS),
            "domain_adaptation.method",
            f"unknown method '{self.method}'{closest(self.method, ('auto', *DOMAIN_METHODS))}; "
            f"choose one of: auto, {', '.join(DOMAIN_METHODS)}",
        )
        check(
            self.schedule in DOMAIN_SCHEDULES,
            "domain_adaptation.schedule",
            f"unknown schedule '{self.schedule}'{closest(self.schedule, DOMAIN_SCHEDULES)}; choose one of: {', '.join(DOMAIN_SCHEDULES)}",
        )
        check(self.weight is None or self.weight >= 0, "domain_adaptation.weight", f"must be 0 or more, or null, got {self.weight}")
        check(self.ramp_gamma > 0, "domain_adaptation.ramp_gamma", f"must be positive, got {self.ramp_gamma}")
        check(
            self.pooling in ("auto", "mean", "cls"),
            "domain_adaptation.pooling",
            f"unknown pooling '{self.pooling}'{closest(self.pooling, ('auto', 'mean', 'cls'))}; choose one of: auto, mean, cls",
        )
        check(self.discriminator_hidden > 0, "domain_adaptation.discriminator_hidden", f"must be positive, got {self.discriminator_hidden}")
        check(
            self.discriminator_lr_multiplier > 0,
            "domain_adaptation.discriminator_lr_multiplier",
            f"must be positive, got {self.discriminator_lr_multiplier}",
        )
        check(self.mcc_temperature > 0, "domain_adaptation.mcc_temperature", f"must be positive, got {self.mcc_temperature}")
        check(
            0.0 < self.pseudo_label_threshold < 1.0,
            "domain_adaptation.pseudo_label_threshold",
            f"must be in (0, 1), got {self.pseudo_label_threshold}",
        )
        check(self.self_training_rounds >= 0, "domain_adaptation.self_training_rounds", f"must be 0 or more, got {self.self_training_rounds}")
        check(
            0.0 < self.pseudo_label_fraction <= 1.0,
            "domain_adaptation.pseudo_label_fraction",
            f"must be in (0, 1], got {self.pseudo_label_fraction}",
        )
        check(
            self.max_target_samples is None or self.max_target_samples > 0,
            "domain_adaptation.max_target_samples",
            f"must be positive or null, got {self.max_target_samples}",
        )
