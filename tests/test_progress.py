"""Progress bars for the long steps outside the Trainer, on a terminal only, none under --quiet."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import yaml

from tests.test_image import image_config
from tests.tiny_models import make_tiny_vit, toy_image_folder


def run_on_a_terminal(argv: list[str], cwd: Path) -> tuple[int, str]:
    """`python -m tlhub ARGV` with stdout and stderr on a pseudo-terminal, as a user sees it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal (tqdm draws nothing in 0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TLHUB_QUIET", None)
    proc = subprocess.Popen([sys.executable, "-m", "tlhub", *argv], stdout=follower, stderr=follower, cwd=cwd, env=env)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=600), b"".join(chunks).decode("utf-8", "replace")


def test_checking_and_feature_extraction_show_bars_on_a_terminal_and_quiet_hides_them(tmp_path: Path) -> None:
    model, images = make_tiny_vit(tmp_path / "vit"), toy_image_folder(tmp_path / "images", n_per_class=6)
    training = {"num_train_epochs": 1, "overwrite_output_dir": True, "disable_tqdm": False}  # the Trainer's bars too
    cfg = image_config(model, images, tmp_path / "run", "feature_extraction", training=training)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, shown = run_on_a_terminal(["train", "c.yaml"], tmp_path)
    assert code == 0, shown[-2000:]
    assert "checking images (data.train)" in shown and "features" in shown and "ex/s" in shown
    code, shown = run_on_a_terminal(["--quiet", "train", "c.yaml"], tmp_path)
    assert code == 0, shown[-2000:]
    assert "checking images" not in shown and "it/s" not in shown and "ex/s" not in shown
    assert "eval_accuracy" in shown  # the results still print


def test_bars_stay_out_of_non_interactive_logs(tmp_path: Path) -> None:
    model, images = make_tiny_vit(tmp_path / "vit"), toy_image_folder(tmp_path / "images", n_per_class=6)
    cfg = image_config(model, images, tmp_path / "run", "feature_extraction", training={"num_train_epochs": 1})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "tlhub", "train", "c.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "checking images" not in proc.stderr and "ex/s" not in proc.stderr
