"""Progress bars in a log file: transient bars are not drawn, lasting ones redraw rarely
(lib.core.progress), and on a watched stderr (a Jupyter kernel's) they draw as tqdm does."""
import os
import subprocess
import sys
from pathlib import Path

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


def _stderr(tmp_path, **env) -> str:
    """What the script writes to stderr when stderr is a file, with ``env`` added."""
    log = tmp_path / "run.log"
    clean = {k: v for k, v in os.environ.items() if k not in ("JPY_PARENT_PID", "KAGGLE_KERNEL_RUN_TYPE")
             and not k.startswith("TQDM_")}
    with open(log, "w") as err:
        subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], stderr=err, check=True,
                       env={**clean, **env}, timeout=120)
    return log.read_text()


def test_a_log_file_gets_no_transient_bar_and_one_final_state_of_a_lasting_one(tmp_path):
    text = _stderr(tmp_path)
    assert "transient" not in text
    assert text.count("lasting") == 2  # its first draw and its final state (a redraw a tenth of a second without the rule)
    assert "60/60" in text and text.rstrip().endswith("done")


def test_a_notebook_kernel_draws_every_bar(tmp_path):
    text = _stderr(tmp_path, JPY_PARENT_PID="1")
    assert "transient" in text
    assert text.count("lasting") > 2  # redrawn as it goes


def test_tqdm_environment_variables_still_apply(tmp_path):
    assert "lasting" not in _stderr(tmp_path, TQDM_DISABLE="1")
