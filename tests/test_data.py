"""Data loading: file formats, label maps, stratified splits, sampling, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from tests.conftest import config_file, one_line_error, text_config
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.data import load_data
from tlhub.errors import DataError
from tlhub.modalities import get_modality


def cfg_for(train: Path | str, tmp_path: Path, **data) -> object:
    return config_from_dict(
        {"modality": "text", "model": {"name_or_path": "unused"}, "data": {"train": str(train), **data}, "training": {"output_dir": str(tmp_path / "o")}}
    )


def load(train, tmp_path, **data):
    return load_data(cfg_for(train, tmp_path, **data), get_modality("text"))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet", "saved"])
def test_every_format_reads_the_same(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(toy_sentiment_rows(40))
    path = tmp_path / f"train{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    loaded = load(path, tmp_path, validation_split=0.25)
    assert loaded.label_names == ["neg", "pos"]
    assert len(loaded.splits["train"]) == 30 and len(loaded.splits["validation"]) == 10
    # stratified: both classes equally represented in the validation split
    assert sorted(loaded.splits["validation"]["labels"]) == [0] * 5 + [1] * 5


def test_integer_labels_sort_numerically_and_validation_file_is_checked(tmp_path: Path) -> None:
    rows = [{"text": f"t {i}", "label": i % 3 * 5} for i in range(30)]  # labels 0, 5, 10
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[:6]).to_csv(tmp_path / "val.csv", index=False)
    loaded = load(tmp_path / "train.csv", tmp_path, validation=str(tmp_path / "val.csv"), max_train_samples=12)
    assert loaded.label_names == ["0", "5", "10"]
    assert len(loaded.splits["train"]) == 12 and len(loaded.splits["validation"]) == 6
    assert loaded.splits["validation"]["labels"] == [0, 1, 2, 0, 1, 2]

    pd.DataFrame([{"text": "x", "label": 7}]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as info:
        load(tmp_path / "train.csv", tmp_path, validation=str(tmp_path / "bad.csv"))
    assert str(info.value) == f"data.validation ({tmp_path / 'bad.csv'}): row 1: label '7' does not occur in the training data (labels: 0, 5, 10)"


def test_text_pairs(tmp_path: Path) -> None:
    rows = [{"premise": f"a {i}", "hypothesis": f"b {i}", "label": ["yes", "no"][i % 2]} for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    loaded = load(tmp_path / "pairs.csv", tmp_path, text_column="premise", text_pair_column="hypothesis")
    assert loaded.label_names == ["no", "yes"]


@pytest.mark.parametrize(
    ("rows", "data", "message"),
    [
        ([{"text": "a", "label": 0}] * 4, {}, "only one class ('0') in column 'label'; classification needs at least two"),
        ([{"sentence": "a", "label": 0}], {}, "no column 'text' (set by data.text_column); columns are: sentence, label"),
        ([{"text": "a", "label": 0}, {"text": " ", "label": 1}], {}, "row 2: empty text in column 'text'; fill it in or drop the row"),
        ([{"text": "a", "label": 0}, {"text": "b", "label": None}], {}, "row 2: empty label in column 'label'; fill it in or drop the row"),
    ],
)
def test_bad_data_names_file_row_and_column(tmp_path: Path, rows: list, data: dict, message: str) -> None:
    path = tmp_path / "train.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load(path, tmp_path, **data)
    assert str(info.value) == f"data.train ({path}): {message}"


def test_missing_files_and_unreachable_hub(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data.train: .*nope.csv: no such file or folder$"):
        load(tmp_path / "nope.csv", tmp_path)
    with pytest.raises(DataError, match=r"^data.train: 'someone/dataset' is not a local file or folder, and loading it from the Hub failed"):
        load("someone/dataset", tmp_path)


# --------------------------------------------------------------------------- classes and columns the data cannot serve (issue 27)


def test_a_class_with_a_single_row_cannot_be_split_off(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    rows = toy_sentiment_rows(40) + [{"text": "the food", "label": "meh"}]
    data = write_rows(tmp_path / "toy.csv", rows)
    err = one_line_error(capsys, ["train", str(config_file(tmp_path / "c.yaml", text_config(tiny_bert, data, tmp_path / "run")))])
    assert err == (f"tlhub: error: data.train ({data}): class 'meh' has a single row, which a validation split (data.validation_split) "
                   "cannot put in both training and validation; add rows of it, drop it, or give data.validation\n")  # fmt: skip


def test_text_columns_of_numbers_train_and_nested_values_are_named(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    rows = toy_sentiment_rows(40)
    codes = write_rows(tmp_path / "codes.csv", [{"text": 1000 + i, "label": r["label"]} for i, r in enumerate(rows)])  # read as numbers
    assert main(["train", str(config_file(tmp_path / "c.yaml", text_config(tiny_bert, codes, tmp_path / "run", training={"max_steps": 1})))]) == 0
    nested = tmp_path / "nested.jsonl"
    nested.write_text("".join(json.dumps({"text": {"title": r["text"]} if i == 2 else r["text"], "label": r["label"]}) + "\n" for i, r in enumerate(rows)))
    err = one_line_error(capsys, ["train", str(config_file(tmp_path / "n.yaml", text_config(tiny_bert, nested, tmp_path / "run2")))])
    assert err == (f"tlhub: error: data.train ({nested}): row 3: column 'text' holds a mapping where other rows hold str; give every "
                   "row the same kind of value\n")  # fmt: skip
    listed = tmp_path / "listed.parquet"
    pd.DataFrame({"text": [[r["text"]] for r in rows], "label": [r["label"] for r in rows]}).to_parquet(listed)
    err = one_line_error(capsys, ["train", str(config_file(tmp_path / "l.yaml", text_config(tiny_bert, listed, tmp_path / "run3")))])
    assert err == f"tlhub: error: data.train ({listed}): row 1: column 'text' holds a list, not text; give one string per row\n"
