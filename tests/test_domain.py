"""Domain adaptation: the gradient-reversal layer, CORAL and MMD, the Trainer subclass on a
toy shifted dataset, and DANN/CORAL/MMD/DAPT through `tlhub train` with tiny BERTs."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from torch import nn
from transformers import PretrainedConfig, Trainer, Seq2SeqTrainingArguments, default_data_collator
from transformers.modeling_outputs import SequenceClassifierOutput

from tests.conftest import USE_CPU, text_config
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main
from tlhub.config import DomainAdaptationConfig, config_from_dict
from tlhub.data import load_data
from tlhub.modalities import get_modality
from tlhub.errors import ConfigError, DataError
from tlhub.pipeline import finetune
from tlhub.domain.adaptation import Adaptation
from tlhub.domain.losses import DomainClassifier, coral_loss, mmd_loss, ramp, reverse_gradient
from tlhub.domain.results import class_drift, drift_warning
from tlhub.trainer import TlhubTrainer

# --------------------------------------------------------------------------- the pieces


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    weights = torch.randn(4, 3)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)  # identity forward
    (y * weights).sum().backward()
    assert torch.allclose(x.grad, -0.3 * weights)


def test_domain_classifier_reverses_what_reaches_the_features() -> None:
    torch.manual_seed(0)
    clf = DomainClassifier(5, hidden=7).eval()  # no dropout: the passes below are comparable
    features = torch.randn(8, 5, requires_grad=True)
    clf.reversal.coefficient = 0.0
    clf(features).sum().backward()
    assert torch.count_nonzero(features.grad) == 0  # coefficient 0: nothing flows back
    features.grad = None
    clf.reversal.coefficient = 2.0
    clf(features).sum().backward()
    x = features.detach().clone().requires_grad_()
    clf.net(x).sum().backward()  # the same classifier without the reversal
    assert torch.allclose(features.grad, -2.0 * x.grad, atol=1e-6)
    assert all(p.grad is not None for p in clf.net[0].parameters())  # the classifier itself learns normally


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_domain_classifier_is_1_lipschitz_in_the_features(scale: float) -> None:
    # the reversed gradient never exceeds the domain loss's own, however small the features
    # (sentence embeddings: a plain layer norm multiplied it by 1/spread) or large
    torch.manual_seed(0)
    clf = DomainClassifier(384, hidden=256)
    for _ in range(20):  # spectral norm's power iteration converges in training mode
        clf(torch.randn(4, 384))
    clf.eval()
    features = (scale * torch.randn(32, 384)).requires_grad_()
    clf.reversal.coefficient = 1.0
    clf(features).sum().backward()  # d(sum of logits)/d(row) is that row's logit gradient
    assert float(features.grad.norm(dim=1).max()) <= 1.05
    with torch.no_grad():
        logits = clf(features)
    assert float(logits.abs().max()) <= 16 + 3  # sqrt(hidden) past the layer norm, plus biases


def test_coral_zero_for_identical_positive_for_shifted() -> None:
    g = torch.Generator().manual_seed(0)
    source = torch.randn(64, 8, generator=g)
    assert abs(float(coral_loss(source, source.clone()))) < 1e-6
    other = torch.randn(64, 8, generator=g)
    shifted = other * 3.0 + 2.0  # different mean and scale
    assert float(coral_loss(source, shifted)) > 10 * max(float(coral_loss(source, other)), 1e-6)
    assert float(coral_loss(source, shifted)) > 1e-3


def test_mmd_unbiased_near_zero_for_one_distribution_positive_for_shifted() -> None:
    g = torch.Generator().manual_seed(0)
    # two batches of 16 from one distribution: 0 on average (the biased estimate: about 0.4)
    draws = [float(mmd_loss(torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g))) for _ in range(200)]
    assert abs(sum(draws) / len(draws)) < 0.02
    source, other = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    shifted = other * 3.0 + 2.0  # different mean and scale
    assert float(mmd_loss(source, shifted)) > 1.0 > 10 * abs(float(mmd_loss(source, other)))
    # drawing one batch's rows together (the collapse the biased estimate rewards) costs
    assert float(mmd_loss(source, other * 0.2)) > 10 * abs(float(mmd_loss(source, other)))


def test_ramp_rises_from_zero_to_one() -> None:
    assert ramp(0.0) == 0.0
    assert 0.45 < ramp(0.1) < 0.5  # 2/(1+e^-1)-1
    assert ramp(1.0) > 0.999
    assert ramp(2.0) == ramp(1.0)


# --------------------------------------------------------------------------- a toy shift


class ToyNet(nn.Module):
    """x (2-d) -> linear features -> linear classifier; returns hidden_states like transformers."""

    def __init__(self) -> None:
        super().__init__()
        self.config = PretrainedConfig(hidden_size=8)
        self.encoder = nn.Linear(2, 8)
        self.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, output_hidden_states: bool = False, **_) -> SequenceClassifierOutput:
        hidden = self.encoder(x)
        logits = self.classifier(hidden)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=(hidden.unsqueeze(1),) if output_hidden_states else None)


def shifted_domains(n: int, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The label is the sign of x1 in both domains. In the source, x2 copies x1 (a proxy a
    source-only model leans on); in the target, x2 is -x1 shifted by 3, so a model that reads
    x2 is wrong there. Features that ignore x2 are the ones that look alike in both domains."""
    rng = np.random.default_rng(seed)

    def domain(target: bool) -> datasets.Dataset:
        y = rng.integers(0, 2, n)
        x1 = (2 * y - 1) * 1.0 + rng.normal(0, 0.5, n)
        x2 = (-x1 + 3.0 if target else x1) + rng.normal(0, 0.1, n)
        return datasets.Dataset.from_dict({"x": np.stack([x1, x2], 1).astype(np.float32).tolist(), "labels": y.tolist()})

    return domain(False), domain(True)


def toy_accuracy(method: str | None, tmp_path: Path, seed: int = 0) -> float:
    source, target = shifted_domains(400, seed)
    torch.manual_seed(seed)
    model = ToyNet()
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / (method or "source_only")),
        num_train_epochs=6,
        learning_rate=0.02,
        per_device_train_batch_size=32,
        report_to="none",
        save_strategy="no",
        use_cpu=USE_CPU,
        disable_tqdm=True,
        seed=seed,
        remove_unused_columns=False,
    )
    common = {"model": model, "args": args, "train_dataset": source, "data_collator": default_data_collator}
    if method is None:
        trainer = Trainer(**common)
    else:
        settings = DomainAdaptationConfig(target="toy", method=method, weight={"coral": 20.0}.get(method, 1.0), schedule="constant")
        trainer = TlhubTrainer(**common, adaptation=Adaptation(settings, target.remove_columns("labels")))
    trainer.train()
    predictions = trainer.predict(target)
    return float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())


def test_adaptation_beats_source_only_on_a_shifted_toy(tmp_path: Path) -> None:
    source_only = toy_accuracy(None, tmp_path)
    assert source_only < 0.7, source_only  # the source-only model leans on x2 and fails on the target
    # dann is left out: on this toy it escapes the source-only solution on only some seeds
    # (1 of 5 checked), while coral and mmd do on 4 and 5 of 5; seed 0 is one where both do.
    for method in ("coral", "mmd"):
        adapted = toy_accuracy(method, tmp_path)
        assert adapted > source_only + 0.15, (method, adapted, source_only)


# --------------------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("domains")
    source = write_rows(folder / "source.csv", toy_sentiment_rows(64, seed=1))
    target_rows = [{"review": r["text"], "label": r["label"]} for r in toy_sentiment_rows(48, seed=2)]
    target = write_rows(folder / "target.csv", target_rows)
    return source, target


def domain_config(tiny_bert: Path, domains: tuple[Path, Path], out: Path, strategy: str, **da) -> dict:
    source, target = domains
    cfg = text_config(
        tiny_bert, source, out, strategy,
        domain_adaptation={"target": str(target), "text_column": "review", **da},
    )
    cfg["training"].update(num_train_epochs=1, logging_steps=1)
    return cfg


@pytest.mark.parametrize(("method", "strategy"), [("dann", "full"), ("coral", "partial"), ("mmd", "lora")])
def test_alignment_methods_train_through_the_pipeline(method, strategy, tiny_bert, domains, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = domain_config(tiny_bert, domains, out, strategy, method=method, compare_source_only=method == "dann")
    results = finetune(config_from_dict(cfg))
    assert results["domain_adaptation_method"] == method
    assert results["target_samples"] == 48
    assert 0.0 <= results["target_accuracy"] <= 1.0
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [entry["domain_loss"] for entry in state["log_history"] if "domain_loss" in entry]
    assert logged and all(np.isfinite(logged)) and any(value != 0.0 for value in logged)  # mmd's unbiased estimate may be < 0
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["target_accuracy"] == results["target_accuracy"]
    if method == "dann":  # the baseline ran too, and both accuracies sit side by side
        assert (out / "source_only" / "all_results.json").is_file()
        assert "source_only_target_accuracy" in saved
        assert saved["target_accuracy_gain"] == pytest.approx(saved["target_accuracy"] - saved["source_only_target_accuracy"])
        # the domain classifier is not part of the saved model
        from safetensors import safe_open

        with safe_open(str(out / "model.safetensors"), "pt") as f:
            assert not any("domain" in key for key in f.keys())
    else:
        assert "source_only_target_accuracy" not in saved


def test_dapt_pretrains_on_the_target_then_fine_tunes(tiny_bert, domains, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = domain_config(tiny_bert, domains, out, "full", method="dapt", compare_source_only=False, dapt={"max_steps": 4, "batch_size": 8})
    results = finetune(config_from_dict(cfg))
    info = json.loads((out / "dapt" / "tlhub_dapt.json").read_text())
    assert info["target_texts"] == 48 and info["texts"] == 48
    assert np.isfinite(info["train_loss"])
    assert (out / "dapt" / "model.safetensors").is_file()
    assert "target_accuracy" in results
    from safetensors.torch import load_file

    original = load_file(str(tiny_bert / "model.safetensors"))
    adapted = load_file(str(out / "dapt" / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(original[key], adapted[key])  # the backbone moved


# --------------------------------------------------------------------------- errors


def test_unknown_method_names_the_key_and_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"domain_adaptation.method: unknown method 'danm' \(did you mean 'dann'\?\)"):
        DomainAdaptationConfig(target="t.csv", method="danm")


def test_feature_extraction_cannot_align(tiny_bert, domains, tmp_path, capsys) -> None:
    cfg = domain_config(tiny_bert, domains, tmp_path / "run", "feature_extraction", method="coral")
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "domain_adaptation.method: coral adapts the backbone to the target, but strategy.name: feature_extraction trains a head" in err


def test_missing_target_column_is_named(tiny_bert, domains, tmp_path, capsys) -> None:
    import yaml

    cfg = domain_config(tiny_bert, domains, tmp_path / "run", "full", method="dann")
    cfg["domain_adaptation"]["text_column"] = "body"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "domain_adaptation.target" in err and "no column 'body' (set by domain_adaptation.text_column)" in err


def test_image_and_audio_models_adapt_through_the_pipeline(tmp_path: Path) -> None:
    """The same Trainer subclass adapts a ViT (cdan on its patch tokens, full) and a
    wav2vec2 (mcc on its predictions, lora; coral on its frames): the domain loss is logged
    and the target scored."""
    from tests.test_audio import audio_config, write_tones
    from tests.test_image import image_config
    from tests.tiny_models import make_tiny_vit, make_tiny_wav2vec2, toy_image_folder

    images = toy_image_folder(tmp_path / "images", n_per_class=8)
    target_images = toy_image_folder(tmp_path / "target-images", n_per_class=4, seed=1)
    image = image_config(make_tiny_vit(tmp_path / "vit"), images, tmp_path / "image-run", "full")
    image["domain_adaptation"] = {"target": str(target_images), "method": "cdan", "compare_source_only": False}

    write_tones(tmp_path / "tones", per_class=8)
    write_tones(tmp_path / "target-tones", per_class=4, rate=22050, seed=1)  # another recording rate
    audio = audio_config(make_tiny_wav2vec2(tmp_path / "w2v"), tmp_path / "tones", tmp_path / "audio-run", strategy={"name": "lora", "lora": {"r": 4}}, data={"audio_column": "audio"})
    audio["domain_adaptation"] = {"target": str(tmp_path / "target-tones"), "method": "coral", "weight": 100.0, "compare_source_only": False}

    mcc = {**audio, "training": {**audio["training"], "output_dir": str(tmp_path / "audio-mcc")},
           "domain_adaptation": {**audio["domain_adaptation"], "method": "mcc", "weight": 1.0}}  # fmt: skip
    # self_training rounds: the teacher's target rows (another folder, another recording rate) join the source's
    rounds = [
        {**cfg, "training": {**cfg["training"], "output_dir": str(tmp_path / f"{name}-self-training")},
         "domain_adaptation": {**cfg["domain_adaptation"], "method": "self_training", "weight": 1.0}}
        for name, cfg in (("image", image), ("audio", audio))
    ]  # fmt: skip
    for cfg, method, n_target in ((image, "cdan", 8), (audio, "coral", 8), (mcc, "mcc", 8), (rounds[0], "self_training", 8), (rounds[1], "self_training", 8)):
        cfg["training"].update(num_train_epochs=2, logging_steps=1)
        results = finetune(config_from_dict(cfg))
        assert results["domain_adaptation_method"] == method and results["target_samples"] == n_target
        assert 0.0 <= results["target_accuracy"] <= 1.0
        if method == "self_training":
            teacher = json.loads((Path(cfg["training"]["output_dir"]) / "teacher" / "all_results.json").read_text())
            assert results["pseudo_labelled_rows"] >= 2, results
            assert results["train_samples"] == teacher["train_samples"] + results["pseudo_labelled_rows"]
        state = json.loads((Path(cfg["training"]["output_dir"]) / "trainer_state.json").read_text())
        logged = [entry["domain_loss"] for entry in state["log_history"] if "domain_loss" in entry]
        # (a tiny random model is confident on no target row: self-training's own loss may stay 0)
        assert logged and all(np.isfinite(logged)) and (max(logged) > 0 or method == "self_training"), (method, logged)


def test_image_target_reads_the_split_folder_it_names(tmp_path: Path) -> None:
    """A root with train/ and val/: data.train reads train/, and the target reads the folder
    of domain_adaptation.target_split (val/), not train/ again."""
    from tests.test_image import image_config
    from tests.tiny_models import toy_image_folder
    from tlhub.modalities import get_modality
    from tlhub.domain.target import load_target

    toy_image_folder(tmp_path / "root" / "train", n_per_class=6)
    toy_image_folder(tmp_path / "root" / "val", n_per_class=3, seed=1)
    cfg = image_config(tmp_path / "unused-model", tmp_path / "root" / "train", tmp_path / "run")
    cfg["domain_adaptation"] = {"target": str(tmp_path / "root"), "target_split": "val", "method": "mmd"}
    target = load_target(config_from_dict(cfg), get_modality("image"), ["bright", "dark"])
    paths = target.unlabelled.with_format(None)["image"]
    assert len(paths) == 6 and all(Path(p).parent.parent == (tmp_path / "root" / "val").resolve() for p in paths)
    assert target.labelled is not None  # the target's label column, read for scoring
    cfg["domain_adaptation"]["target_split"] = "test"
    with pytest.raises(DataError, match=r"^domain_adaptation.target: .*root has a train/ folder but no test/ folder for this split$"):
        load_target(config_from_dict(cfg), get_modality("image"), ["bright", "dark"])


# --------------------------------------------------------------------------- issue 14: mcc, cdan, self-training, stable dann


def test_mcc_loss_is_zero_for_confident_distinct_classes_and_largest_when_confused() -> None:
    from tlhub.domain.losses import mcc_loss

    confident = torch.tensor([[20.0, 0.0], [0.0, 20.0], [20.0, 0.0], [0.0, 20.0]])
    confused = torch.zeros(4, 2)
    assert mcc_loss(confident, temperature=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert mcc_loss(confused, temperature=1.0).item() == pytest.approx(0.5)  # (classes - 1) / classes
    between = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    assert 0.0 < mcc_loss(between).item() < 0.5


def test_pseudo_labels_train_only_confident_target_rows() -> None:
    from tlhub.domain.losses import pseudo_label_loss

    logits = torch.tensor([[5.0, 0.0], [0.0, 0.1], [0.0, 6.0], [0.2, 0.0]], requires_grad=True)
    loss, kept = pseudo_label_loss(logits, threshold=0.9)
    assert kept == 0.5  # rows 0 and 2 are above 0.9
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[3].abs().sum() == 0  # unconfident rows: no gradient
    assert logits.grad[0, 0] < 0 and logits.grad[2, 1] < 0  # confident rows: pushed further towards their class


def test_confident_rows_keep_the_surest_share_of_each_predicted_class() -> None:
    from tlhub.domain.losses import confident_rows

    # 6 rows predicted class 0 (confidence rising with the row), 2 predicted class 1, none class 2
    logits = torch.tensor([[0.1 * i, 0.0, 0.0] for i in range(1, 7)] + [[0.0, 3.0, 0.0], [0.0, 1.0, 0.0]])
    labels = confident_rows(logits.softmax(-1), fraction=0.5)
    assert labels.tolist() == [-100, -100, -100, 0, 0, 0, 1, -100]  # half of each class, the surest first
    assert confident_rows(logits.softmax(-1), fraction=1.0).tolist() == [0, 0, 0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize(("method", "scale"), [("dann", 0.3), ("cdan", 0.3), ("coral", 0.5), ("mmd", 0.15), ("mcc", 0.5)])
def test_the_log_reports_the_methods_own_loss_and_training_adds_it_weighted(method, scale, tiny_bert) -> None:
    """The user reads `domain_loss` against log 2 for dann and cdan whatever their weight (0.3);
    the step adds weight x loss, and for the non-adversarial methods the schedule's coefficient
    too (here 0.5), which dann and cdan apply inside the gradient reversal instead."""
    from transformers import AutoModelForSequenceClassification

    from tlhub.domain.model import DomainAdaptedModel

    torch.manual_seed(0)
    task_model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    model = DomainAdaptedModel(task_model, DomainAdaptationConfig(target="t", method=method))
    ids = torch.randint(5, model.config.vocab_size, (2, 8, 6))
    source = {"input_ids": ids[0], "attention_mask": torch.ones(8, 6, dtype=torch.long)}
    target = {"input_ids": ids[1], "attention_mask": torch.ones(8, 6, dtype=torch.long)}
    out = model(labels=torch.tensor([0, 1] * 4), target_inputs=target, coefficient=0.5, **source)
    assert out.domain_loss.item() == pytest.approx(scale * out.method_loss.item(), rel=1e-5)
    assert not out.method_loss.requires_grad and out.domain_loss.requires_grad
    if method in ("dann", "cdan"):  # an untrained domain classifier cannot tell the domains apart yet
        assert out.method_loss.item() == pytest.approx(float(np.log(2)), abs=0.1)


def test_class_drift_is_the_distance_between_predicted_and_source_shares() -> None:
    assert class_drift([50, 50], [450, 450]) == 0.0
    assert class_drift([100, 0], [450, 450]) == pytest.approx(0.5)
    assert class_drift([0, 0, 10], [5, 5, 0]) == pytest.approx(1.0)
    assert class_drift([22, 78], [50, 50]) == pytest.approx(0.28)


def test_a_model_leaning_to_one_class_on_the_target_is_warned_about() -> None:
    assert drift_warning(["neg", "pos"], [53, 47], [450, 450]) is None  # within DRIFT_WARNING: no warning
    assert drift_warning(["neg", "pos"], [78, 22], [450, 450]) == (
        "domain_adaptation: the model predicts 'neg' for 78% of the target rows, where 50% of the source's labels are 'neg' "
        "(target_class_drift 0.28); unless the target's classes really are that unbalanced, the model leans towards it: "
        "check target_predictions.jsonl and compare with method: source_only (tlhub compare CONFIG --methods "
        "source_only,...) before relying on it"
    )


def test_target_predictions_round_trip_and_a_stale_file_is_refused(tmp_path: Path) -> None:
    from tlhub.domain.results import read_target_predictions, write_target_predictions

    probabilities = torch.tensor([[0.9, 0.1], [0.25, 0.75]])
    path = tmp_path / "target_predictions.jsonl"
    write_target_predictions(path, probabilities, ["neg", "pos"])
    assert json.loads(path.read_text().splitlines()[1]) == {"row": 1, "label": "pos", "probabilities": {"neg": 0.25, "pos": 0.75}}
    assert torch.allclose(read_target_predictions(path, ["pos", "neg"], 2), probabilities.flip(-1))  # in the order asked
    with pytest.raises(DataError, match=r"target_predictions.jsonl: 2 rows, but domain_adaptation.target has 3; remove its folder"):
        read_target_predictions(path, ["neg", "pos"], 3)
    with pytest.raises(DataError, match=r"not the target predictions of a finished run"):
        read_target_predictions(tmp_path / "missing.jsonl", ["neg", "pos"], 2)


def blob_domains(n: int, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Two classes as blobs at x1 = -1 and +1; the target's are shifted by +0.9 along x1, so
    the source's boundary (x1 = 0) cuts through the target's first class. The target's
    clusters still have a low-density gap between them: where MCC moves the boundary."""
    rng = np.random.default_rng(seed)

    def domain(shift: float) -> datasets.Dataset:
        y = rng.integers(0, 2, n)
        x = np.stack([(2 * y - 1) + rng.normal(0, 0.45, n) + shift, rng.normal(0, 0.45, n)], 1)
        return datasets.Dataset.from_dict({"x": x.astype(np.float32).tolist(), "labels": y.tolist()})

    return domain(0.0), domain(0.9)


def blob_accuracy(method: str | None, tmp_path: Path, seed: int) -> float:
    source, target = blob_domains(400, seed)
    torch.manual_seed(seed)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / f"{method}-{seed}"), num_train_epochs=6, learning_rate=0.02, per_device_train_batch_size=32,
                             report_to="none", save_strategy="no", use_cpu=USE_CPU, disable_tqdm=True, seed=seed, remove_unused_columns=False)  # fmt: skip
    common = {"model": ToyNet(), "args": args, "train_dataset": source, "data_collator": default_data_collator}
    if method is None:
        trainer = Trainer(**common)
    else:
        trainer = TlhubTrainer(**common, adaptation=Adaptation(DomainAdaptationConfig(target="toy", method=method), target.remove_columns("labels")))
    trainer.train()
    predictions = trainer.predict(target)
    return float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())


def test_mcc_at_its_defaults_beats_source_only_on_shifted_clusters(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        source_only, adapted = blob_accuracy(None, tmp_path, seed), blob_accuracy("mcc", tmp_path, seed)
        assert source_only < 0.8 and adapted > source_only + 0.03, (seed, source_only, adapted)


@pytest.mark.parametrize(("method", "strategy"), [("mcc", "lora"), ("self_training", "partial"), ("cdan", "full"), ("dann", "lora")])
def test_new_methods_train_through_the_pipeline_and_report_the_predicted_classes(method, strategy, tiny_bert, domains, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = domain_config(tiny_bert, domains, out, strategy, method=method, compare_source_only=False)
    results = finetune(config_from_dict(cfg))
    assert results["domain_adaptation_method"] == method and 0.0 <= results["target_accuracy"] <= 1.0
    assert sum(results["target_predicted_classes"].values()) == 48 and set(results["target_predicted_classes"]) == {"neg", "pos"}
    # the target rows' labels, as the user came for them: one line per row, in order, matching the histogram
    lines = [json.loads(line) for line in (out / "target_predictions.jsonl").read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(48))
    assert all(set(line["probabilities"]) == {"neg", "pos"} and abs(sum(line["probabilities"].values()) - 1) < 1e-4 for line in lines)
    assert all(line["label"] == max(line["probabilities"], key=line["probabilities"].get) for line in lines)
    assert {n: sum(line["label"] == n for line in lines) for n in ("neg", "pos")} == results["target_predicted_classes"]
    # the drift is measured against the source's own training rows (before a round adds target rows)
    loaded = load_data(config_from_dict(cfg), get_modality("text"))
    source = [loaded.splits["train"]["labels"].count(i) for i in range(2)]
    predicted = [results["target_predicted_classes"][n] for n in loaded.label_names]
    assert results["target_class_drift"] == round(class_drift(predicted, source), 4)
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [entry["domain_loss"] for entry in state["log_history"] if "domain_loss" in entry]
    assert logged and all(np.isfinite(logged))
    if method == "self_training":
        assert all(0.0 <= e["pseudo_labelled_fraction"] <= 1.0 for e in state["log_history"] if "pseudo_labelled_fraction" in e)
        # one round at the defaults: a teacher (the online run) labelled half of each class it predicts
        teacher = json.loads((out / "teacher" / "all_results.json").read_text())
        assert teacher["domain_adaptation_method"] == "self_training" and not (out / "teacher" / "teacher").exists()
        assert results["teacher_target_accuracy"] == teacher["target_accuracy"]
        assert results["pseudo_labelled_rows"] == sum(round(n / 2) or 1 for n in teacher["target_predicted_classes"].values() if n)
        assert 0.0 <= results["pseudo_label_accuracy"] <= 1.0
        assert results["train_samples"] == teacher["train_samples"] + results["pseudo_labelled_rows"]  # they joined the source rows
    from safetensors import safe_open

    with safe_open(str(out / ("adapter_model.safetensors" if strategy == "lora" else "model.safetensors")), "pt") as f:
        assert not any("domain" in key or "cdan" in key for key in f.keys())  # the saved model is the task model alone


@pytest.mark.parametrize("method", ["dann", "cdan"])
def test_the_domain_loss_stays_bounded_at_a_high_learning_rate(method, tiny_bert, domains, tmp_path) -> None:
    """What blew up on FSDD (domain loss 0.7 -> 200+): the bottleneck's layer norm bounds it now."""
    cfg = domain_config(tiny_bert, domains, tmp_path / "run", "full", method=method, compare_source_only=False, schedule="constant")
    cfg["training"].update(learning_rate=0.5, num_train_epochs=3)
    finetune(config_from_dict(cfg))
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    logged = [entry["domain_loss"] for entry in state["log_history"] if "domain_loss" in entry]
    # |logit| <= sqrt(256) (+ biases) past the layer norm and spectral norms: before them, 1e6 here
    assert len(logged) >= 6 and all(np.isfinite(logged)) and max(logged) < 20.0, logged


def test_the_domain_classifier_learns_at_its_own_rate(tiny_bert, domains, tmp_path) -> None:
    cfg = config_from_dict(domain_config(tiny_bert, domains, tmp_path / "run", "full", method="dann", discriminator_lr_multiplier=10.0))
    from tlhub.modalities import get_modality

    task = get_modality("text").load_model(cfg, ["neg", "pos"])
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "o"), learning_rate=1e-4, report_to="none", use_cpu=USE_CPU)
    trainer = TlhubTrainer(model=task, args=args, train_dataset=datasets.Dataset.from_dict({"x": [0]}),
                           adaptation=Adaptation(cfg.domain_adaptation, datasets.Dataset.from_dict({"x": [0]})))  # fmt: skip
    optimizer = trainer.create_optimizer()
    classifier = {id(p) for p in trainer.model.domain_classifier.parameters()}
    rates = [group["lr"] for group in optimizer.param_groups if any(id(p) in classifier for p in group["params"])]
    assert rates == [pytest.approx(1e-3)]  # one group, 10 x the run's 1e-4
    assert {id(p) for g in optimizer.param_groups if g["lr"] == pytest.approx(1e-4) for p in g["params"]}.isdisjoint(classifier)


def test_a_method_the_setup_cannot_use_is_a_config_error_naming_the_field(tiny_bert, domains, tmp_path, capsys) -> None:
    from tests.test_image import image_config
    from tests.tiny_models import make_tiny_vit, toy_image_folder

    images = toy_image_folder(tmp_path / "images", n_per_class=4)
    cfg = image_config(make_tiny_vit(tmp_path / "vit"), images, tmp_path / "run", "full")
    cfg["domain_adaptation"] = {"target": str(images), "method": "dapt"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlhub: error: domain_adaptation.method: dapt is masked-language-model pretraining, for text; for image use mcc")
    cfg = domain_config(tiny_bert, domains, tmp_path / "run2", "feature_extraction", method="mcc")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "d.yaml")]) == 2
    assert "domain_adaptation.method: mcc adapts the backbone to the target, but strategy.name: feature_extraction" in capsys.readouterr().err


def test_compare_methods_trains_each_on_the_same_data_and_tabulates_the_target_accuracy(tiny_bert, domains, tmp_path, capsys) -> None:
    cfg = domain_config(tiny_bert, domains, tmp_path / "run", "full", method="dann")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "c.yaml"), "--methods", "source_only,mcc", "--output-dir", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in report["rows"]] == ["source_only", "mcc"] and report["metric"] == "target_accuracy"
    for row in report["rows"]:
        saved = json.loads((out / row["method"] / "all_results.json").read_text())
        assert row["metric"] == saved["target_accuracy"] and saved["domain_adaptation_method"] == row["method"]
        assert not (out / row["method"] / "source_only").exists()  # source_only is a row, not a baseline per method
    assert (out / "compare.png").stat().st_size > 10_000
    shown = capsys.readouterr().out
    assert "Domain adaptation" in shown and "neg:" in shown and "pos:" in shown  # (rich wraps the title)
    assert main(["compare", str(tmp_path / "c.yaml"), "--methods", "source_only,mccc"]) == 2
    assert "--methods: unknown method 'mccc' (did you mean 'mcc'?)" in capsys.readouterr().err


def test_a_null_weight_is_the_methods_own_and_follows_a_method_swap() -> None:
    import dataclasses

    dann = DomainAdaptationConfig(target="t", method="dann")
    assert dann.weight is None and dann.loss_weight == 0.3
    assert dataclasses.replace(dann, method="cdan").loss_weight == dataclasses.replace(dann, method="mmd").loss_weight == 0.3
    assert dataclasses.replace(dann, method="mcc").loss_weight == 1.0  # tlhub compare --methods swaps the method
    assert DomainAdaptationConfig(target="t", method="dann", weight=2.0).loss_weight == 2.0


@pytest.mark.parametrize(("modality", "method"), [("text", "mcc"), ("image", "self_training"), ("audio", "self_training")])
def test_method_auto_is_what_measured_best_for_the_modality_and_is_recorded(modality, method, tmp_path) -> None:
    cfg = config_from_dict({"modality": modality, "model": {"name_or_path": "m"}, "data": {"train": "t.csv"},
                            "domain_adaptation": {"target": "u.csv"}, "training": {"output_dir": str(tmp_path)}})  # fmt: skip
    assert DomainAdaptationConfig(target="u.csv").method == "auto"
    assert cfg.domain_adaptation.method == method  # config.yaml records the method that ran
    assert cfg.to_dict()["domain_adaptation"]["method"] == method
