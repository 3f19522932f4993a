"""The same numbers before and after a reshaping of the code, measured side by side.

    HF_HUB_OFFLINE=1 python scripts/bench_refactor_equivalence.py --before 71c36bd [--after REV]

Checks out `--before` (a git revision, and `--after`, or this working tree) into worktrees and
runs, with each tree's code, on the same seed:

- the text demo (`tlhub demo`: MiniLM fine-tuned on the shipped sentences, pretrained and
  random weights), reading each run's all_results.json;
- one domain-adaptation benchmark row: Amazon -> Yelp sentences, MiniLM, full fine-tuning,
  mcc, seed 0 (`scripts/bench_domain_shifts.py --shift text --methods mcc --seeds 0`), and its
  source-only baseline.

Prints both sets of numbers and their largest difference; exits 1 when any differs by more
than `--tolerance` (float arithmetic on 2 CPU cores repeats to the last digit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("eval_accuracy", "eval_loss", "train_loss", "target_accuracy")


def tree(revision: str, work: Path) -> Path:
    """A checkout of `revision` (a git worktree, made once) beside this repository, where the
    benchmark scripts find ../shared/datasets as they do from here."""
    path = ROOT.parent / f"tlhub-{revision}"
    if not (path / "tlhub").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(path), revision], check=True)
    return path


def numbers(code: Path, out: Path) -> dict[str, dict[str, float]]:
    """The demo's and the domain row's numbers, computed by the tlhub in `code`."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TLHUB_CACHE": str(out / "cache")}
    python = [sys.executable]
    subprocess.run([*python, "-m", "tlhub.cli", "--quiet", "demo", "--output-dir", str(out / "demo")], cwd=code, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    subprocess.run([*python, str(code / "scripts" / "bench_domain_shifts.py"), "--shift", "text", "--methods", "source_only,mcc",
                    "--seeds", "0", "--work", str(out / "domain"), "--json", str(out / "domain.json")],
                   cwd=code, env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    found = {}
    for run in ("pretrained", "scratch"):
        results = json.loads((out / "demo" / run / "all_results.json").read_text())
        found[f"demo {run}"] = {k: results[k] for k in KEYS if k in results}
    for row in json.loads((out / "domain.json").read_text())["rows"]:
        found[f"Amazon -> Yelp {row['method']}"] = {"target_accuracy": row["metric"]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="71c36bd", help="the git revision to compare with (default: main before issue 26)")
    parser.add_argument("--after", default=None, help="the revision to compare (default: this working tree)")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "equivalence")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--json", type=Path, help="write both sets of numbers here")
    args = parser.parse_args()
    before = numbers(tree(args.before, args.work), args.work / "before")
    after = numbers(tree(args.after, args.work) if args.after else ROOT, args.work / "after")
    worst = 0.0
    print(f"| run | metric | before ({args.before}) | after ({args.after or 'working tree'}) | difference |\n| --- | --- | ---: | ---: | ---: |")
    for run, values in before.items():
        for key, value in values.items():
            now = after.get(run, {}).get(key, float("nan"))
            worst = max(worst, abs(now - value))
            print(f"| {run} | {key} | {value:.6f} | {now:.6f} | {now - value:+.2e} |")
    print(f"largest difference: {worst:.2e}")
    if args.json:
        args.json.write_text(json.dumps({"before": before, "after": after, "revision": args.before, "largest_difference": worst}, indent=2) + "\n")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
