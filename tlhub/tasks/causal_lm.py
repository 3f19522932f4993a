"""Causal language modelling as instruction fine-tuning, the way TRL's SFT does it.

Rows are a prompt and a completion (``data.prompt_column``, ``data.completion_column``: TRL's
names), chat ``messages`` (the last assistant message is the completion), or a classification
table whose labels become answers (``data.label_words``, the prompt ``data.source_prefix`` +
the text, as text2text reads them). Each row is formatted with the model's chat template
where it has one (else prompt + completion + the end-of-sequence token), and the loss counts
the completion's tokens only: the prompt's labels are -100. With ``data.packing`` the rows of
a training batch are packed into one sequence without padding, each keeping its own
positions, so that no row attends to another (transformers' padding-free flattening).

Evaluation generates the completion from the prompt alone (greedy, at most
``data.max_target_length`` new tokens) and scores it: ``exact_match`` (after lower-casing and
removing punctuation: "Positive." answers "positive") and ROUGE; ``perplexity`` is the
exponential of the completion tokens' loss; with ``data.label_words``, ``answer_accuracy``
compares the next-token likelihood of each answer word after the prompt (the model's own
prompt as a classifier, with no generation needed).
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from accelerate.utils import send_to_device
from torch import nn
from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

from tlhub.data import text_column
from tlhub.errors import DataError
from tlhub.loading import input_length, load_auto_model
from tlhub.tasks.base import TASKS, Task, TextSide, combined, first

if TYPE_CHECKING:
    from tlhub.config import RunConfig

PROMPT, COMPLETION = "prompt_ids", "completion_ids"  # what the transform gives evaluation besides the model inputs


def normalize_answer(text: str) -> str:
    """An answer as exact match compares it: lower case, no punctuation, single spaces."""
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def formatted(tokenizer: Any, prompt: str | list[dict[str, str]], completion: str | None) -> tuple[str, str]:
    """(prompt text, completion text): the chat template's turns where the tokenizer has one,
    the prompt ready for the answer (the generation prompt); else the plain texts, the
    completion ending with the end-of-sequence token, so that the model learns to stop."""
    turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        if completion is None:
            return head, ""
        whole = tokenizer.apply_chat_template([*turns, {"role": "assistant", "content": completion}], tokenize=False)
        return head, whole[len(head) :] if whole.startswith(head) else completion + (tokenizer.eos_token or "")
    text = prompt if isinstance(prompt, str) else "\n".join(turn["content"] for turn in prompt)
    return text, "" if completion is None else completion + (tokenizer.eos_token or "")


def tokenized(tokenizer: Any, prompt_text: str, completion_text: str, max_length: int) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids), at most `max_length` in all: the prompt loses its start
    first (the question's end and the answer matter most), then the completion its end."""
    chat = bool(getattr(tokenizer, "chat_template", None))  # the template writes the special tokens itself
    prompt_ids = tokenizer(prompt_text, add_special_tokens=not chat)["input_ids"]
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"] if completion_text else []
    completion_ids = completion_ids[:max_length]
    keep = max_length - len(completion_ids)
    return (prompt_ids[-keep:] if keep > 0 else []), completion_ids


def cut_end(tokenizer: Any, prompt: str | list[dict[str, str]], tokens: int) -> str | list[dict[str, str]]:
    """`prompt` with the last `tokens` tokens of its text (a chat's last message) cut off: a long
    document keeps its opening, and the chat template's turns around it stay whole."""

    def cut(text: str) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[: max(len(ids) - tokens, 0)])

    if isinstance(prompt, str):
        return cut(prompt)
    return [*prompt[:-1], {**prompt[-1], "content": cut(prompt[-1]["content"])}]


def encoded(tokenizer: Any, prompt: str | list[dict[str, str]], completion: str | None, max_length: int, keep: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one row, at most `max_length` in all. ``keep_end`` (TRL's
    truncation_mode): the prompt loses its start; ``keep_start``: its text loses its end (the
    instruction and a document's opening stay), cut again while a token boundary still leaves it long."""
    head, tail = formatted(tokenizer, prompt, completion)
    prompt_ids, completion_ids = tokenized(tokenizer, head, tail, max_length)
    for _ in range(4):  # each pass cuts what is still over; the re-tokenised cut may differ by a token or two
        over = len(tokenizer(head, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]) - len(prompt_ids)
        if keep != "keep_start" or over <= 0:
            break
        prompt = cut_end(tokenizer, prompt, over + 2)
        head, tail = formatted(tokenizer, prompt, completion)
        prompt_ids, completion_ids = tokenized(tokenizer, head, tail, max_length)
    return prompt_ids, completion_ids


class CompletionCollator:
    """Batches of prompt + completion: padded on the right with the loss's -100 on padding, or
    with `packing` (training) flattened into one row whose positions restart at every example,
    which the model reads as separate rows (without a cache: see __call__).
    Evaluation batches also carry the prompts alone, padded on the left for generation, and
    with `answers` (label words) each answer's first token, which the model's next-token
    scores choose between."""

    def __init__(self, tokenizer: Any, packing: bool, answers: list[str] | None = None) -> None:
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100) if packing else None
        self.answers = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in answers] if answers else None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        evaluating = PROMPT in features[0]
        rows = [{k: f[k] for k in ("input_ids", "labels") if k in f} for f in features]
        if self.flatten is not None and not evaluating and "labels" in rows[0]:
            # transformers keeps packed rows apart (a block-diagonal causal mask from the position
            # ids) only where the forward builds no key-value cache, which it otherwise does in training
            return {**self.flatten(rows), "use_cache": False}
        batch = self.padded([f["input_ids"] for f in features], self.pad, left=False)
        if "labels" in features[0]:
            batch["labels"] = self.padded([f["labels"] for f in features], -100, left=False)["input_ids"]
        if evaluating:
            prompts = self.padded([f[PROMPT] for f in features], self.pad, left=True)
            batch["prompt_input_ids"], batch["prompt_attention_mask"] = prompts["input_ids"], prompts["attention_mask"]
            if self.answers:
                batch["answer_token_ids"] = torch.tensor(self.answers).expand(len(features), -1)
        return batch

    @staticmethod
    def padded(sequences: list[list[int]], value: int, left: bool) -> dict[str, torch.Tensor]:
        width = max((len(s) for s in sequences), default=0)
        ids = torch.full((len(sequences), width), value, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, seq in enumerate(sequences):
            if seq:
                where = slice(width - len(seq), width) if left else slice(0, len(seq))
                ids[i, where], mask[i, where] = torch.tensor(seq), 1
        return {"input_ids": ids, "attention_mask": mask}


class CausalLMText(TextSide):
    """The text modality's side of causal_lm."""

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        return {}  # prompt + completion, messages, or text + label: prepare() says which it found

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> tuple[datasets.Dataset, int]:
        """Rows as (prompt, completion) columns, each checked: from prompt and completion
        columns, chat messages, or text and label columns with data.label_words."""
        data = cfg.data
        columns = ds.column_names
        if data.prompt_column in columns:
            if data.completion_column not in columns:
                raise DataError(f"{origin}: no column '{data.completion_column}' (set by data.completion_column) beside "
                                f"'{data.prompt_column}'; columns are: {', '.join(columns)}")  # fmt: skip
            ds = text_column(text_column(ds, data.prompt_column, origin, "prompt"), data.completion_column, origin, "completion")
            prompts, completions = [data.source_prefix + p for p in ds[data.prompt_column]], list(ds[data.completion_column])
        elif data.messages_column in columns:
            prompts, completions = [], []
            for row, messages in enumerate(ds[data.messages_column], 1):
                well_formed = isinstance(messages, list) and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                                  and isinstance(m.get("content"), str) for m in messages)  # fmt: skip
                if not well_formed or not messages or messages[-1]["role"] != "assistant":
                    raise DataError(f"{origin}: row {row}: column '{data.messages_column}' must be a list of chat messages "
                                    "({'role': ..., 'content': text}) ending with the assistant's, the completion to learn")  # fmt: skip
                prompts.append([{"role": m["role"], "content": m["content"]} for m in messages[:-1]])
                completions.append(messages[-1]["content"])
        elif data.text_column in columns and data.label_column in columns and data.label_words:
            words = data.label_words
            ds = text_column(ds, data.text_column, origin)
            prompts = [data.source_prefix + text for text in ds[data.text_column]]
            completions = []
            for row, value in enumerate(ds[data.label_column], 1):
                label = str(int(value)) if isinstance(value, (int, float)) else str(value)
                if label not in words:
                    raise DataError(f"{origin}: row {row}: label '{label}' has no entry in data.label_words ({', '.join(words)})")
                completions.append(words[label])
        else:
            raise DataError(
                f"{origin}: causal_lm reads columns '{data.prompt_column}' and '{data.completion_column}' (data.prompt_column, "
                f"data.completion_column), chat messages in '{data.messages_column}', or '{data.text_column}' and "
                f"'{data.label_column}' with data.label_words; columns are: {', '.join(columns)}"
            )
        for row, (prompt, completion) in enumerate(zip(prompts, completions), 1):
            if (isinstance(prompt, str) and not prompt.strip()) or not prompt:
                raise DataError(f"{origin}: row {row}: empty prompt; fill it in or drop the row")
            if not isinstance(completion, str) or not completion.strip():
                raise DataError(f"{origin}: row {row}: empty completion in column '{data.completion_column}'; fill it in or drop the row")
        keep = [c for c in columns if c not in (data.prompt_column, data.completion_column)]
        table = {c: ds[c] for c in keep} if keep else {}
        table.update({data.prompt_column: prompts, data.completion_column: completions})
        return datasets.Dataset.from_dict(table), 0

    def load_model(self, cfg: RunConfig, label_names: list[str] | None, pad_token_id: int | None) -> nn.Module:
        model = load_auto_model(AutoModelForCausalLM, cfg.model)
        if model.config.pad_token_id is None and pad_token_id is not None:
            model.config.pad_token_id = pad_token_id  # batched generation pads with it
            if model.generation_config is not None and model.generation_config.pad_token_id is None:
                model.generation_config.pad_token_id = pad_token_id
        return model

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        data = cfg.data
        length = input_length(data.max_length, processor)

        def apply(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = {"input_ids": [], "labels": [], PROMPT: []}
            completions = batch.get(data.completion_column) or [None] * len(batch[data.prompt_column])
            for prompt, completion in zip(batch[data.prompt_column], completions):
                prompt_ids, completion_ids = encoded(processor, prompt, completion, length, data.truncation_mode)
                out["input_ids"].append(prompt_ids + completion_ids)
                out["labels"].append([-100] * len(prompt_ids) + completion_ids)
                out[PROMPT].append(prompt_ids)
            if train:
                del out[PROMPT]  # training reads the whole sequence; evaluation generates from the prompt too
            if completions[0] is None:
                del out["labels"]
            return out

        return apply

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        words = sorted(set(cfg.data.label_words.values())) if cfg.data.label_words else None
        return CompletionCollator(processor, cfg.data.packing, words)

    def peft_task_type(self) -> str | None:
        return "CAUSAL_LM"

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        return {cfg.data.prompt_column: cfg.data.source_prefix + value}


@TASKS.register("causal_lm")
class CausalLM(Task):
    name = "causal_lm"
    generation_settings = True  # generates: Seq2SeqTrainingArguments' generation keys apply
    metrics = ("exact_match", "rouge")
    main_metric = ("rougeL", True)
    pipeline_tags = {"text": "text-generation"}
    prompted = True
    text = CausalLMText()

    def generates(self, cfg: RunConfig, source: str | None = None) -> bool:
        return True

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        metrics = combined(self.metrics)
        words = sorted(set(cfg.data.label_words.values())) if cfg.data.label_words else None

        def compute(pred: Any) -> dict[str, float]:
            generated = first(pred.predictions)
            predictions = decode(processor, generated)
            references = decode(processor, pred.label_ids)
            scores = metrics.compute(predictions=[normalize_answer(p) for p in predictions], references=[normalize_answer(r) for r in references])
            if words and isinstance(pred.predictions, tuple) and len(pred.predictions) > 1:
                chosen = [words[i] for i in np.asarray(pred.predictions[1]).reshape(-1)[: len(references)]]
                scores["answer_accuracy"] = float(np.mean([normalize_answer(c) == normalize_answer(r) for c, r in zip(chosen, references)]))
            return scores

        return compute

    def prediction_step(self, trainer: Any, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool) -> tuple[Any, Any, Any] | None:
        """A decoder LM's evaluation batch (it carries the prompts alone): the loss of prompt +
        completion (the completion's tokens only), then the completion generated from the prompt
        alone, and with answer words the one the model's next-token scores choose."""
        if "prompt_input_ids" not in inputs:
            return None
        inputs = send_to_device(inputs, trainer.args.device)
        prompt, prompt_mask = inputs.pop("prompt_input_ids"), inputs.pop("prompt_attention_mask")
        answers = inputs.pop("answer_token_ids", None)
        with torch.no_grad(), trainer.autocast_smart_context_manager():
            loss = trainer.compute_loss(model, inputs).detach()
        if prediction_loss_only:
            return loss, None, None
        generator = trainer.accelerator.unwrap_model(model)
        with torch.no_grad():
            generated = generator.generate(
                input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=trainer.args.generation_max_length, do_sample=False
            )[:, prompt.shape[1] :]
            predictions: Any = generated
            if answers is not None:
                last = generator(input_ids=prompt, attention_mask=prompt_mask).logits[:, -1]
                predictions = (generated, last.gather(1, answers).argmax(-1))
        labels = inputs["labels"]
        completion = torch.full_like(labels, -100)
        for row, ids in enumerate(labels):  # the completion's tokens, moved to the start
            kept = ids[ids != -100]
            completion[row, : len(kept)] = kept
        return loss, predictions, completion

    def derived_metrics(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        loss = metrics.get(f"{prefix}_loss")
        return {f"{prefix}_perplexity": round(math.exp(min(loss, 50.0)), 4)} if loss is not None else {}

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        prompts = batch["prompt_input_ids"]
        generated = run.model.generate(
            input_ids=prompts, attention_mask=batch["prompt_attention_mask"], max_new_tokens=run.cfg.data.max_target_length, do_sample=False
        )
        texts = run.processor.batch_decode(generated[:, prompts.shape[1] :], skip_special_tokens=True)
        return [{"input": v, "text": t.strip()} for v, t in zip(inputs, texts)]

    def card_code(self, cfg: RunConfig, pipeline_tag: str) -> str:
        # the prompt as training wrote it: the chat template's turns where the tokenizer has one, else the text itself
        prompt = repr(cfg.data.source_prefix + "Your prompt")
        return (
            "from transformers import pipeline\npipe = pipeline('text-generation', model=RUN_DIR)\n"
            f"prompt = [{{'role': 'user', 'content': {prompt}}}] if pipe.tokenizer.chat_template else {prompt}\n"
            f"out = pipe(prompt, max_new_tokens={cfg.data.max_target_length}, return_full_text=False)[0]['generated_text']\n"
            "print(out[-1]['content'] if isinstance(out, list) else out)"
        )


def decode(processor: Any, ids: np.ndarray) -> list[str]:
    """Token ids (padded with -100) as text, special tokens left out."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = np.where(np.asarray(ids) < 0, tokenizer.pad_token_id, ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


__all__ = ["CausalLM", "CompletionCollator", "formatted", "normalize_answer"]
