"""Extractive question answering (issue 39): answers found in their contexts, windows and
offsets, post-processing and the null answer, SQuAD's scores, training on a toy task, the run
read back by transformers, and each bad input; on a tiny BERT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import cpu_training
from tests.tiny_models import make_tiny_qa_bert, toy_qa_rows
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.data import load_data
from tlhub.metrics import load_metric
from tlhub.modalities import get_modality
from tlhub.errors import DataError
from tlhub.pipeline import evaluate_run, finetune, load_run, predict
from tlhub.tasks.question_answering import Decoding, answer_span, best_answer, span_positions, windows


@pytest.fixture(scope="module")
def qa_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qa_bert(tmp_path_factory.mktemp("qa-bert"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("qa") / "toy.jsonl", toy_qa_rows(160))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa_config(model: Path, data: Path, out: Path, strategy: str = "full", epochs: int = 5, **data_keys) -> dict:
    rate = {"lora": 2e-2, "feature_extraction": 3e-2}.get(strategy, 3e-3)
    return {
        "modality": "text",
        "task": "question_answering",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "answer_column": "answer", "validation_split": 0.25, "max_length": 48, "doc_stride": 16, **data_keys},
        "strategy": {"name": strategy},
        "training": cpu_training(out, num_train_epochs=epochs, learning_rate=rate, per_device_train_batch_size=16),
    }


# --------------------------------------------------------------------------- answers, windows, offsets


def test_a_plain_answer_is_found_verbatim_or_with_spaces_normalised() -> None:
    context = "Earth ' s atmosphere holds 40 , 000 tonnes ; the atmosphere"
    assert answer_span(context, "atmosphere") == (10, "atmosphere")  # the first occurrence
    assert answer_span(context, "Earth's atmosphere") == (0, "Earth ' s atmosphere")  # mapped back to the context's characters
    assert answer_span(context, "40,000") == (27, "40 , 000")
    assert answer_span(context, "oxygen") is None


def test_windows_overlap_and_an_answer_straddling_two_windows_is_labelled_in_the_one_that_holds_it(qa_bert: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qa_bert)
    words = ["food"] * 8 + ["very", "good"] + ["staff"] * 12 + ["excellent"]  # "very good" at the first window's edge, "excellent" last
    context = " ".join(words)
    question = "what is it ?"  # 4 tokens + 3 special: 9 context tokens a window of 16
    encoded = windows(tokenizer, [question], [context], length=16, stride=4)
    assert len(encoded["input_ids"]) > 2 and set(encoded["overflow_to_sample_mapping"]) == {0}
    good = {"text": ["very good"], "answer_start": [context.index("very good")]}
    last = {"text": ["excellent"], "answer_start": [len(context) - len("excellent")]}
    found_good, found_last = [], []
    for i in range(len(encoded["input_ids"])):
        sequence, offsets = encoded.sequence_ids(i), encoded["offset_mapping"][i]
        for answer, found in ((good, found_good), (last, found_last)):
            start, end = span_positions(sequence, offsets, 1, answer)
            if (start, end) != (0, 0):
                assert context[offsets[start][0] : offsets[end][1]] == answer["text"][0]
                found.append(i)
    # the first window holds "very" but not "good": the null answer there; the next window holds both
    first_context = [o for o, s in zip(encoded["offset_mapping"][0], encoded.sequence_ids(0)) if s == 1]
    assert first_context[-1][1] == context.index(" good")  # the first window ends on "very"
    assert found_good == [1]
    assert found_last == [len(encoded["input_ids"]) - 1]  # the answer at the very end: the last window, its last context token


def test_post_processing_picks_the_best_valid_span_or_the_null_answer() -> None:
    context = "aa bb cc dd"
    offsets = [None, None, (0, 2), (3, 5), (6, 8), (9, 11), None]  # [CLS] question cc... [SEP]
    start = np.array([0.0, 9.0, 1.0, 4.0, 0.5, 0.0, 0.0])  # the question token scores highest: never an answer
    end = np.array([0.0, 9.0, 0.0, 1.0, 5.0, 0.0, 0.0])
    answer = best_answer(context, [(start, end, offsets)], Decoding(n_best=20, max_answer_length=30, null_threshold=0.0))
    assert (answer["answer"], answer["start"], answer["end"]) == ("bb cc", 3, 8)
    # its score: start x end probability over the context tokens and [CLS]
    allowed = [0, 2, 3, 4, 5]
    p_start, p_end = np.exp(start[allowed]) / np.exp(start[allowed]).sum(), np.exp(end[allowed]) / np.exp(end[allowed]).sum()
    assert answer["score"] == pytest.approx(p_start[2] * p_end[3])
    # too long for max_answer_length: the best span of one token (cc: 0.5 + 5 beats bb: 4 + 1)
    assert best_answer(context, [(start, end, offsets)], Decoding(max_answer_length=1))["answer"] == "cc"
    # the null answer: [CLS] beats the best span (4 + 5) by more than the threshold
    null = start.copy(), end.copy()
    null[0][0], null[1][0] = 6.0, 6.0
    assert best_answer(context, [(*null, offsets)], Decoding(null_threshold=0.0)) == pytest.approx(
        {"answer": "", "score": best_answer(context, [(*null, offsets)], Decoding())["score"], "start": 0, "end": 0}
    )
    assert best_answer(context, [(*null, offsets)], Decoding(null_threshold=5.0))["answer"] == "bb cc"  # 12 - 9 < 5
    assert best_answer(context, [(*null, offsets)], Decoding(null_threshold=None))["answer"] == "bb cc"  # SQuAD 1.1: never null
    # two windows: the best span over both, the null score the smaller one
    second = ([9.0, 0.0, 0.0, 0.0, 0.0, 8.0, 0.0], [9.0, 0.0, 0.0, 0.0, 0.0, 8.0, 0.0], offsets)
    assert best_answer(context, [(start, end, offsets), second], Decoding())["answer"] == "dd"  # 16 > 9; null min(0, 18) = 0


def test_squad_scores_match_hand_computed_cases() -> None:
    squad = load_metric("squad")
    predictions = ["the Eiffel tower", "tower", "", "Paris", ""]
    references = [["Eiffel Tower"], ["Eiffel Tower", "a tower"], [], [], ["Rome"]]
    scores = squad.compute(predictions=predictions, references=references)
    # exact: 1, 1 ("a tower" -> "tower"), 1 (no answer, none given), 0, 0; f1 likewise
    assert scores["exact_match"] == pytest.approx(60.0) and scores["f1"] == pytest.approx(60.0)
    assert scores["HasAns_total"] == 3 and scores["HasAns_exact_match"] == pytest.approx(200 / 3)
    assert scores["NoAns_total"] == 2 and scores["NoAns_exact_match"] == pytest.approx(50.0)
    partial = squad.compute(predictions=["Eiffel"], references=[["the Eiffel Tower"]])
    assert partial["exact_match"] == 0.0 and partial["f1"] == pytest.approx(100 * 2 * (1.0 * 0.5) / 1.5)  # precision 1, recall 1/2
    assert "HasAns_f1" not in partial  # every question has an answer: SQuAD 1.1's keys only


# --------------------------------------------------------------------------- training, reloading, transformers


def reference_answer(model, tokenizer, question: str, context: str, max_answer_len: int) -> dict:
    """What transformers' own span decoding (the question-answering pipeline's, kept in
    transformers 5 for document question answering) answers, from the run loaded by transformers."""
    from transformers.pipelines.document_question_answering import select_starts_ends

    encoded = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0]
    with torch.no_grad():
        out = model(**encoded)
    p_mask = np.array([0 if s == 1 else 1 for s in encoded.sequence_ids(0)])
    p_mask[0] = 0  # [CLS]
    starts, ends, scores, null = select_starts_ends(out.start_logits.numpy(), out.end_logits.numpy(), p_mask, encoded["attention_mask"].numpy(),
                                                    handle_impossible_answer=True, max_answer_len=max_answer_len)  # fmt: skip
    if null > scores[0]:
        return {"answer": "", "score": null, "start": 0, "end": 0}
    begin, finish = int(offsets[starts[0]][0]), int(offsets[ends[0]][1])
    return {"answer": context[begin:finish], "score": float(scores[0]), "start": begin, "end": finish}


def test_full_fine_tuning_learns_the_toy_task_and_transformers_reads_the_run_alike(qa_bert: Path, toy: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    out = tmp_path / "run"
    cfg = qa_config(qa_bert, toy, out)
    cfg["training"]["logging_steps"] = 4
    results = finetune(config_from_dict(cfg))
    for key in ("eval_exact_match", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "eval_loss"):
        assert key in results, key
    assert results["eval_f1"] > 90 and results["eval_NoAns_exact_match"] > 80  # the word after "is", or none
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert losses[-1] < losses[0] / 2
    inputs = ["what is it ? ||| the food is good and the staff", "what is it ? ||| the food was really very", "what is it ? ||| a place is awful"]
    ours = predict(load_run(out), inputs)
    assert [r["answer"] for r in ours] == ["good", "", "awful"]
    scored = evaluate_run(load_run(out), str(toy), max_samples=40)  # tlhub evaluate: the same post-processing
    assert scored["eval_total"] == 40 and scored["eval_f1"] > 90
    model, tokenizer = AutoModelForQuestionAnswering.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    for row, value in zip(ours, inputs):
        question, _, context = value.partition(" ||| ")
        theirs = reference_answer(model, tokenizer, question, context, 30)
        assert (theirs["answer"], theirs["start"], theirs["end"]) == (row["answer"], row["start"], row["end"])
        assert theirs["score"] == pytest.approx(row["score"], rel=1e-4)


@pytest.mark.parametrize("strategy", ["lora", "feature_extraction", "partial"])
def test_other_strategies_train_and_predict(strategy: str, qa_bert: Path, toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    results = finetune(config_from_dict(qa_config(qa_bert, toy, out, strategy, epochs=2)))
    assert "eval_f1" in results and results["trainable_params"] < results["total_params"]
    if strategy == "feature_extraction":
        assert results["trainable_params"] == 32 * 2 + 2  # the span head alone, on frozen per-token features
    ours = predict(load_run(out), ["what is it ? ||| the food is good"])[0]
    assert {"answer", "score", "start", "end"} <= set(ours)
    if strategy == "lora":  # merged/: a plain transformers model, read by transformers alike
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        merged = AutoModelForQuestionAnswering.from_pretrained(out / "merged").eval()
        theirs = reference_answer(merged, AutoTokenizer.from_pretrained(out / "merged"), "what is it ?", "the food is good", 30)
        assert (theirs["answer"], theirs["start"], theirs["end"]) == (ours["answer"], ours["start"], ours["end"])


def test_the_validation_split_keeps_each_passage_on_one_side(qa_bert: Path, tmp_path: Path) -> None:
    rows = [{"passage": f"the food is {w} and the staff {i}", "question": q, "answer": w}
            for i, w in enumerate(["good", "bad", "great", "poor", "lovely", "awful"] * 3) for q in ("what is it ?", "what is it")]  # fmt: skip
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = qa_config(qa_bert, data, tmp_path / "r", context_column="passage", group_column="passage", validation_split=0.2)
    splits = load_data(config_from_dict(cfg), get_modality("text")).splits
    train, validation = set(splits["train"]["passage"]), set(splits["validation"]["passage"])
    assert not train & validation and len(validation) == 4 and len(splits["validation"]) == 8  # 20 % of 18 passages' 36 rows
    cfg["data"]["group_column"] = "paragraph"
    with pytest.raises(DataError, match=r"no column 'paragraph' \(set by data.group_column\); columns are: passage, question, answers"):
        load_data(config_from_dict(cfg), get_modality("text"))


# --------------------------------------------------------------------------- the command line and bad input


def error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_the_commands_train_predict_and_name_each_bad_input(qa_bert: Path, tmp_path: Path, capsys) -> None:
    rows = toy_qa_rows(80)
    for row in rows[:20]:
        row["answer"] = row["answer"] or "unknown"  # data.no_answer
    rows[20] = {"context": "the food is good", "question": "what is it ?", "answer": "excellent"}  # not in the context: skipped
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    config = tmp_path / "c.yaml"

    def write(rows_: list[dict] | None = None, **data_keys) -> str:
        if rows_ is not None:
            write_jsonl(data, rows_)
        config.write_text(yaml.safe_dump(qa_config(qa_bert, data, tmp_path / "run", epochs=2, no_answer="unknown", **data_keys)))
        return str(config)

    assert main(["train", write()]) == 0
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["skipped_examples"] == {"train": 1} and "eval_NoAns_f1" in results
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "what is it ? ||| the food is good and the staff"]) == 0
    answer, score, span, given = capsys.readouterr().out.rstrip("\n").split("\t")
    assert given == "what is it ? ||| the food is good and the staff" and float(score) <= 1.0 and span.startswith("[")
    assert "question ||| context" in error(capsys, ["predict", str(tmp_path / "run"), "what is it ?"])
    long_question = " ".join(["what"] * 60) + " ||| the food is good"
    assert "input 1: the question leaves no room for the context in 48 tokens" in error(capsys, ["predict", str(tmp_path / "run"), long_question])

    missing = [dict(r, answer="oxygen") for r in rows]
    assert "80 of 80 answers (100%) are not in their context (rows 1, 2," in error(capsys, ["train", write(missing)])
    empty = [dict(r) for r in rows]
    empty[4]["context"] = " "
    assert f"data.train ({data}): row 5: empty context in column 'context'" in error(capsys, ["train", write(empty)])
    squad = [{"context": r["context"], "question": r["question"], "answers": {"text": [r["answer"]], "answer_start": [r["context"].find(r["answer"])]}}
             for r in toy_qa_rows(40) if r["answer"]]  # fmt: skip
    squad[2]["answers"]["answer_start"] = [squad[2]["answers"]["answer_start"][0] + 1]
    err = error(capsys, ["train", write(squad, answer_column="answers")])
    assert f"data.train ({data}): row 3: answer_start {squad[2]['answers']['answer_start'][0]} does not point at the answer" in err
    long = [dict(r, question=" ".join(["what"] * 60)) for r in rows]
    msg = error(capsys, ["train", write(long)])
    assert "training questions (rows 1, 2," in msg and "leave no room for the context in data.max_length=48 tokens" in msg
