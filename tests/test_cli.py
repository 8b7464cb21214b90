"""What every stage script gets from ``lib.cli.run``, in real processes: a numba cache folder of its
own (lib/core/numba_cache.py: two at once never share one, a later one reuses a free one, a
user's choice is kept), a quiet end when the reader of its output goes away, and freed memory
kept for reuse (lib.core.utils.keep_freed_memory)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys

import pytest
from conftest import ROOT

HOLD = """
import sys; sys.path.insert(0, {root!r})
from lib.core import numba_cache
numba_cache.SLOTS = {slots}
print(numba_cache.claim_numba_cache({cache!r}), flush=True)
sys.stdin.readline()  # hold the folder until the test lets go
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(extra)
    return env


def _holder(cache, env=None, slots=32) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), cache=str(cache), slots=slots)],
                            env=env or _env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_processes_running_at_once_get_their_own_folder_and_a_later_one_reuses_a_free_one(tmp_path):
    first, second = _holder(tmp_path), _holder(tmp_path)
    firsts, seconds = first.stdout.readline().strip(), second.stdout.readline().strip()
    assert {firsts, seconds} == {str(tmp_path / "0"), str(tmp_path / "1")}
    first.communicate("\n")
    third = _holder(tmp_path)  # the first has ended: its folder is the lowest free one again
    try:
        assert third.stdout.readline().strip() == firsts
    finally:
        third.communicate("\n")
        second.communicate("\n")
    assert first.returncode == second.returncode == third.returncode == 0


def test_without_a_free_slot_or_a_writable_root_a_process_gets_a_temporary_folder_of_its_own(tmp_path):
    """Falling back to librosa's shared cache brought back the race the slots avoid (review)."""
    (tmp_path / "file").write_text("")
    first, second, third = _holder(tmp_path, slots=1), _holder(tmp_path, slots=1), _holder(tmp_path / "file")
    claimed = [p.stdout.readline().strip() for p in (first, second, third)]
    try:
        assert str(tmp_path / "0") in claimed  # one process holds the only slot
        others = [c for c in claimed if c != str(tmp_path / "0")]
        assert len(others) == 2 and all(os.path.basename(c).startswith("numba-cache-") for c in others)
        assert all(os.path.isdir(c) for c in others)
    finally:
        for p in (first, second, third):
            p.communicate("\n")
    assert not any(os.path.exists(c) for c in others)  # removed at the end of its process


def test_a_cache_folder_the_user_set_is_kept(tmp_path):
    p = _holder(tmp_path / "ours", env=_env(NUMBA_CACHE_DIR=str(tmp_path / "theirs")))
    assert p.communicate("\n")[0].strip() == "None"
    assert not (tmp_path / "ours").exists()


def test_a_stage_compiles_librosa_into_its_own_folder(tmp_path):
    """What a stage script runs (``cli.run``) points numba at ``$XDG_CACHE_HOME/audio-pipeline/numba/0``
    before librosa is imported: librosa's compiled peak picking (a ``guvectorize`` function, the
    kind numba issue #10128 corrupts when two processes cache it at once) lands there."""
    script = ("import sys; sys.path.insert(0, %r)\nfrom lib import cli\n"
              "def main():\n    import os, librosa, numpy as np\n"
              "    assert librosa.util.localmax(np.array([0., 2., 1.])).tolist() == [False, True, False]\n"
              "    print(os.environ['NUMBA_CACHE_DIR'])\n"
              "cli.run('probe', main)\n") % str(ROOT)
    r = subprocess.run([sys.executable, "-c", script], env=_env(XDG_CACHE_HOME=str(tmp_path)),
                       capture_output=True, text=True, timeout=300)
    folder = tmp_path / "audio-pipeline" / "numba" / socket.gethostname() / "0"
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0] == str(folder)
    assert any(p.name.startswith("guf-utils._localmax") for p in folder.rglob("*.nbi"))


def test_a_stage_whose_reader_goes_away_ends_quietly():
    """``leaderboard.py | head`` ended with a BrokenPipeError traceback, "failed" and exit 1 (probe):
    a stage whose stdout's reader has gone ends as ``ls | head`` does, exit 141, nothing said. A
    broken pipe that is not stdout stays an error with its traceback."""
    script = ("import sys; sys.path.insert(0, %r)\nfrom lib import cli\n"
              "def main():\n    if sys.argv[1] == 'other':\n        raise BrokenPipeError(32, 'Broken pipe')\n"
              "    for i in range(100000):\n        print('row', i)\n"
              "cli.run('lines', main)\n") % str(ROOT)
    p = subprocess.Popen([sys.executable, "-c", script, "print"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=_env(NUMBA_CACHE_DIR="unused"))
    assert p.stdout.readline() == b"row 0\n"
    p.stdout.close()  # as head does after its lines
    assert p.wait(timeout=60) == 141 and p.stderr.read() == b""
    r = subprocess.run([sys.executable, "-c", script, "other"], capture_output=True, text=True, timeout=60,
                       env=_env(NUMBA_CACHE_DIR="unused"))
    assert r.returncode == 1 and "BrokenPipeError" in r.stderr and "lines: failed" in r.stderr


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's malloc; a no-op elsewhere")
def test_a_stage_reuses_freed_memory_instead_of_page_faulting_it_in_again():
    """A stage (``cli.run``) allocates and frees a 64-MB array per batch, as an inference batch does:
    glibc's default maps each one afresh (a page fault per 4-kB page, every time; 03 spent 11.4 s
    of its 14.2 s in the kernel that way), :func:`lib.core.utils.keep_freed_memory` reuses the heap."""
    script = ("import sys; sys.path.insert(0, %r)\nfrom lib import cli\nimport resource, numpy as np\n"
              "def main():\n    a = np.ones(8 << 20); del a\n"  # the first one is faulted in either way
              "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "    for _ in range(9):\n        a = np.ones(8 << 20); del a\n"
              "    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
              "cli.run('probe', main) if sys.argv[1] == 'stage' else main()\n") % str(ROOT)
    faults = {}
    for how in ("stage", "plain"):
        r = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, timeout=60,
                           env=_env(NUMBA_CACHE_DIR="unused"))
        assert r.returncode == 0, r.stderr[-2000:]
        faults[how] = int(r.stdout.splitlines()[0])
    # after the first array, the default faults each one in again (at least once per 2-MB huge
    # page), the stage reuses the memory it holds
    assert faults["plain"] >= 9 * 32 and faults["stage"] * 8 < faults["plain"], faults
