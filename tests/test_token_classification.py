"""Token classification (issue 28): CoNLL files and columns of lists, labels aligned to
sub-word tokens, entity-level scores, every strategy, transformers' pipeline, and the bad
inputs a tagged corpus has; on a tiny BERT and a toy tagged corpus."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest
import yaml

from tests.conftest import text_config, with_sections
from tests.test_ecosystem import pipeline_from_card
from tests.tiny_models import toy_ner_rows, write_conll
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.data import load_data
from tlhub.errors import DataError
from tlhub.metrics import load_metric
from tlhub.modalities import get_modality
from tlhub.pipeline import finetune, load_run, predict
from tlhub.tasks.token_classification import TagCollator, aligned


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_conll(tmp_path_factory.mktemp("ner") / "toy.conll", toy_ner_rows(200))


def ner_config(model: Path, rows: Path, out: Path, strategy: str = "full", **sections) -> dict:
    rate = {"lora": 2e-2, "feature_extraction": 3e-2}.get(strategy, 3e-3)
    cfg = with_sections(text_config(model, rows, out, strategy), {"task": "token_classification", "training": {"learning_rate": rate}})
    return with_sections(cfg, sections)


# --------------------------------------------------------------------------- reading


def test_conll_files_read_as_sentences_of_words_and_tags(tmp_path: Path, tiny_bert: Path) -> None:
    text = "-DOCSTART- -X- O O\n\nEmpire NNP B-facility\nState\tB-x\tI-facility\n\t\nhi O\n\n\nthere O\n"
    path = tmp_path / "mixed.conll"
    path.write_text(text)
    loaded = load_data(config_from_dict(ner_config(tiny_bert, path, tmp_path / "r", data={"validation": str(path)})), get_modality("text"))
    rows = loaded.splits["train"].with_format(None)
    assert rows["tokens"] == [["Empire", "State"], ["hi"], ["there"]]  # CoNLL-2003's columns: the first and the last
    assert rows["ner_tags"] == [["B-facility", "I-facility"], ["O"], ["O"]]
    assert loaded.label_names == ["O", "B-facility", "I-facility"]  # O first, then the tags sorted
    assert rows["labels"] == [[1, 2], [0], [0]]
    path.write_text("Empire\tB-facility\nState\n")
    with pytest.raises(DataError, match=r"^data.train: .*mixed.conll: line 2: expected a word and its tag \(word<TAB>tag\), got 'State'$"):
        load_data(config_from_dict(ner_config(tiny_bert, path, tmp_path / "r")), get_modality("text"))


def test_columns_of_lists_with_class_label_ids_read_as_tag_names(tmp_path: Path, tiny_bert: Path) -> None:
    names = ["O", "B-POS", "I-POS", "B-NEG", "I-NEG"]
    rows = toy_ner_rows(40)
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    saved = tmp_path / "hub"
    datasets.Dataset.from_dict({"tokens": [r["tokens"] for r in rows], "ner_tags": [[names.index(t) for t in r["ner_tags"]] for r in rows]},
                               features=features).save_to_disk(str(saved))  # fmt: skip
    loaded = load_data(config_from_dict(ner_config(tiny_bert, saved, tmp_path / "r")), get_modality("text"))
    assert set(loaded.label_names) == {t for r in rows for t in r["ner_tags"]}
    first = loaded.splits["train"].with_format(None)[0]
    assert [loaded.label_names[i] for i in first["labels"]] == first["ner_tags"]


# --------------------------------------------------------------------------- alignment and scores


def test_labels_go_to_the_first_sub_word_token_or_every_token() -> None:
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]  # [CLS] Em ##pire State Build ##ing ##s [SEP]
    assert aligned(word_ids, [1, 2, 2], every_token=False) == [-100, 1, -100, 2, 2, -100, -100, -100]
    continued = aligned(word_ids, [1, 2, 2], every_token=True)
    assert continued[:3] == [-100, 1, -1001] and continued[-1] == -100
    # the collator reads a B- that continues a word as its I-, as transformers' example does
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "x"])})
    batch = TagCollator(tokenizer, {"O": 0, "B-facility": 1, "I-facility": 2})(
        [{"input_ids": [2, 4, 4, 4, 4, 4, 4, 3], "labels": continued}]
    )
    assert batch["labels"].tolist() == [[-100, 1, 2, 2, 2, 2, 2, -100]]


def test_entity_scores_count_exact_spans_of_the_right_type() -> None:
    seqeval = load_metric("seqeval")
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "O", "O"]]
    # spans: true {PER 0-1, LOC 3, ORG 1-2}; predicted {PER 0-1, ORG 3, ORG 1}: only PER is exact
    scores = seqeval.compute(predictions=predictions, references=references)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 3) and scores["f1"] == pytest.approx(1 / 3)
    assert scores["PER_f1"] == 1.0 and scores["LOC_f1"] == 0.0 and scores["ORG_precision"] == 0.0 and scores["ORG_number"] == 1
    assert scores["accuracy"] == pytest.approx(6 / 8)
    # conlleval's rules: an I- after O begins an entity; a type change ends one
    assert seqeval.compute(predictions=[["O", "I-PER", "I-PER"]], references=[["O", "B-PER", "I-PER"]])["f1"] == 1.0
    assert seqeval.compute(predictions=[["B-PER", "I-LOC"]], references=[["B-PER", "I-PER"]])["f1"] == 0.0


# --------------------------------------------------------------------------- every strategy


@pytest.mark.parametrize("strategy", ["full", "lora", "feature_extraction", "partial"])
def test_every_strategy_trains_reloads_and_predicts_what_the_pipeline_does(strategy: str, tagged: Path, tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    epochs = 30 if strategy == "feature_extraction" else 8  # the head alone, on cached features: seconds
    results = finetune(config_from_dict(ner_config(tiny_bert, tagged, out, strategy, training={"num_train_epochs": epochs})))
    for key in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "eval_POS_f1", "eval_NEG_f1"):
        assert key in results, key
    if strategy in ("full", "feature_extraction"):
        assert results["eval_f1"] > 0.5  # the toy entities are learnable (chance is near 0)
    sentences = ["the food was very good", "awful staff and a place", "this was excellent"]
    ours = predict(load_run(out), sentences)
    pipe = pipeline_from_card(out)  # transformers' token-classification pipeline, simple aggregation
    for row, sentence in zip(ours, sentences):
        theirs = pipe(sentence)
        assert [(e["entity_group"], e["start"], e["end"]) for e in theirs] == [(e["entity_group"], e["start"], e["end"]) for e in row["entities"]]
    if strategy == "full":
        assert any(e["entity_group"] in ("POS", "NEG") for row in ours for e in row["entities"])
        assert all(sentence[e["start"] : e["end"]] == e["word"] for row, sentence in zip(ours, sentences) for e in row["entities"])


def test_per_token_features_are_cached(tagged: Path, tiny_bert: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))
    first = finetune(config_from_dict(ner_config(tiny_bert, tagged, tmp_path / "a", "feature_extraction", training={"num_train_epochs": 2})))
    again = finetune(config_from_dict(ner_config(tiny_bert, tagged, tmp_path / "b", "feature_extraction", training={"num_train_epochs": 2})))
    assert first["feature_cache_hit"] is False and again["feature_cache_hit"] is True
    assert again["eval_f1"] == pytest.approx(first["eval_f1"]) and first["trainable_params"] == 32 * 5 + 5  # a head per token


def test_the_predict_command_prints_entities_with_spans(tagged: Path, tiny_bert: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(ner_config(tiny_bert, tagged, out, training={"num_train_epochs": 8})))
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    assert main(["predict", str(out), "the food was very good"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("\tthe food was very good") and ("POS 'good' [18:22]" in line or "POS 'very good' [13:22]" in line), line


# --------------------------------------------------------------------------- bad input


def error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_tagged_rows_are_named(tmp_path: Path, tiny_bert: Path, tagged: Path, capsys) -> None:
    rows = toy_ner_rows(20)
    data = tmp_path / "rows.jsonl"

    def attempt(broken: list[dict], **sections) -> str:
        data.write_text("\n".join(json.dumps(r) for r in broken) + "\n")
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(ner_config(tiny_bert, data, tmp_path / "run", **sections)))
        return error(capsys, ["train", str(config)])

    longer = [dict(r) for r in rows]
    longer[3] = {"tokens": ["a", "b"], "ner_tags": ["O", "O", "O"]}
    assert attempt(longer) == f"tlhub: error: data.train ({data}): row 4: 2 words but 3 tags; give each word one tag\n"
    empty = [dict(r) for r in rows]
    empty[1] = {"tokens": [], "ner_tags": []}
    assert attempt(empty) == f"tlhub: error: data.train ({data}): row 2: an empty sentence in column 'tokens'; drop the row\n"
    unknown = write_conll(tmp_path / "val.conll", [{"tokens": ["good", "Paris"], "ner_tags": ["B-POS", "B-LOC"]}])
    err = attempt(rows, data={"validation": str(unknown)})
    assert err.startswith(f"tlhub: error: data.validation ({unknown}): row 1: tag 'B-LOC' does not occur in the training data (tags: O, B-NEG")


def test_an_i_tag_that_begins_an_entity_is_read_as_b_and_counted(tmp_path: Path, tiny_bert: Path, caplog) -> None:
    rows = toy_ner_rows(20)
    rows[0] = {"tokens": ["very", "good", "food"], "ner_tags": ["I-POS", "I-POS", "O"]}
    data = write_conll(tmp_path / "t.conll", rows)
    with caplog.at_level(logging.WARNING):
        loaded = load_data(config_from_dict(ner_config(tiny_bert, data, tmp_path / "r", data={"validation": str(data)})), get_modality("text"))
    assert "1 I- tag(s) began an entity and were read as B- (rows 1)" in caplog.text
    assert loaded.splits["validation"].with_format(None)[0]["ner_tags"] == ["B-POS", "I-POS", "O"]


def test_domain_adaptation_and_few_shot_draws_for_tags(tmp_path: Path, tiny_bert: Path, tagged: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(ner_config(tiny_bert, tagged, tmp_path / "run", domain_adaptation={"target": str(tagged)})))
    assert "domain_adaptation: supported for task: classification" in error(capsys, ["train", str(config)])
    cfg = config_from_dict(ner_config(tiny_bert, tagged, tmp_path / "r", data={"samples_per_class": 16}))
    assert len(load_data(cfg, get_modality("text")).splits["train"]) == 16  # read as sentences
