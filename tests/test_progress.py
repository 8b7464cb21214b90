"""Progress bars in a log file: transient bars are not drawn, lasting ones redraw rarely
(lib.core.progress), and on a watched stderr (a Jupyter kernel's) they draw as tqdm does."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from lib.core.progress import progress
for _ in progress(range(30), desc="transient", leave=False):
    time.sleep(0.01)
for _ in progress(range(60), desc="lasting"):
    time.sleep(0.01)
print("done", file=sys.stderr)
"""


def _stderr(tmp_path, to_file=True, **env) -> str:
    """What the script writes to stderr, a file (else a pipe), with ``env`` added."""
    clean = {k: v for k, v in os.environ.items() if k not in ("JPY_PARENT_PID", "KAGGLE_KERNEL_RUN_TYPE")
             and not k.startswith("TQDM_")}
    command = [sys.executable, "-c", SCRIPT.format(root=str(ROOT))]
    if not to_file:
        return subprocess.run(command, stderr=subprocess.PIPE, text=True, check=True, env={**clean, **env},
                              timeout=120).stderr
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        subprocess.run(command, stderr=err, check=True, env={**clean, **env}, timeout=120)
    return log.read_text()


@pytest.mark.parametrize("env", [{}, {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}], ids=["shell", "notebook"])
def test_a_log_file_gets_no_transient_bar_and_one_final_state_of_a_lasting_one(tmp_path, env):
    text = _stderr(tmp_path, **env)  # (in a notebook too: !bash run_all.sh > run.log 2>&1: review)
    assert "transient" not in text
    assert text.count("lasting") == 2  # its first draw and its final state (a redraw a tenth of a second without the rule)
    assert "60/60" in text and text.rstrip().endswith("done")
    assert "lasting" in _stderr(tmp_path, to_file=False) and "transient" not in _stderr(tmp_path, to_file=False)


def test_a_notebook_kernel_draws_every_bar(tmp_path):
    text = _stderr(tmp_path, to_file=False, JPY_PARENT_PID="1")  # a notebook's !python: its output is a pipe
    assert "transient" in text
    assert text.count("lasting") > 2  # redrawn as it goes


def test_tqdm_disable_turns_every_bar_off(tmp_path):
    assert "lasting" not in _stderr(tmp_path, to_file=False, TQDM_DISABLE="1", JPY_PARENT_PID="1")
