#!/usr/bin/env bash
# The whole chain: 00_prepare -> 01_features -> 02_train + 03_infer per experiment -> 04_ensemble.
#
#   bash run_all.sh                                      # the competition in input/
#   bash run_all.sh --data-dir ../shared/data/breathing  # or anywhere else
#   bash run_all.sh --data-config configs/data/my.yaml --experiments "configs/a.yaml configs/b.yaml"
#   bash run_all.sh --demo                               # a small SYNTHETIC competition, ~1 minute
#   bash run_all.sh --set train.epochs=5 --set train.batch_size=32   # every experiment, overridden
#   bash run_all.sh --nproc 4     # train every experiment's folds on 4 processes at once (torchrun)
#
# Options: --profile cpu|gpu (default: gpu when CUDA is available), --output-dir DIR, --force,
# --nproc N (default 1: one experiment after the other; N: one torchrun launch of N processes that
# share out the folds of all experiments, each on its own GPU (cuda:<rank mod GPUs>) or its share of
# the CPU cores; docs/distributed.md),
# --set KEY=VALUE (repeatable; passed to 01_features, 02_train and 03_infer: overrides other than
# the run-only keys train.folds/device/compile/distributed/sync_bn make each experiment a variant named
# <config>+<hash>, as the stages do).
# Experiments: --experiments, else the competition config's `experiments:` list, else the profile's.
# With an empty input/ and no --data-dir it says what to put where, then runs the demo.
# Relative paths given as options are taken from the directory it is started in, as the stages take them.
# Python: $PYTHON when set (absolute or on PATH: e.g. PYTHON=/path/to/venv/bin/python), else the active
# virtual environment's, else .venv/bin/python, else python3.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")"
from_caller() {  # a path given on the command line, made absolute from the caller's directory
  case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$caller" "$1" ;; esac
}
need() {  # need OPTION [VALUE ...]: the option has a value
  [ $# -ge 2 ] || { echo "run_all.sh: $1 needs a value (see --help)" >&2; exit 2; }
}

data_config=configs/data/breathing.yaml
data_config_given=""
data_dir=""
profile=auto
experiments=()  # config paths (an array: a path may hold spaces)
output_dir=""
force=""
demo=""
nproc=1
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) need "$@"; data_dir=$(from_caller "$2"); shift 2 ;;
    --data-config) need "$@"; data_config=$(from_caller "$2"); data_config_given=1; shift 2 ;;
    --profile) need "$@"; profile=$2; shift 2 ;;
    --experiments) need "$@"; experiments=(); for e in $2; do experiments+=("$(from_caller "$e")"); done; shift 2 ;;
    --output-dir) need "$@"; output_dir=$(from_caller "$2"); shift 2 ;;
    --force) force=--force; shift ;;
    --nproc) need "$@"; nproc=$2; shift 2 ;;
    --set) need "$@"; sets+=(--set "$2"); shift 2 ;;
    --demo) demo=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The project's virtual environment when there is one and none is active.
if [ -z "${PYTHON:-}" ]; then
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
case "$profile" in auto|cpu|gpu) ;; *) echo "run_all.sh: --profile must be cpu or gpu, got '$profile'" >&2; exit 2 ;; esac
case "$nproc" in ''|*[!0-9]*|0) echo "run_all.sh: --nproc must be a positive whole number, got '$nproc'" >&2; exit 2 ;; esac
if ! "$PYTHON" -c "import torch, torchaudio, librosa, sklearn" 2>/dev/null; then
  echo "run_all.sh: $PYTHON lacks the requirements; install them first (README.md, first command):" >&2
  echo "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
  exit 1
fi

if [ -z "$demo" ] && [ -z "$data_dir" ] && [ ! -f input/train.csv ] && [ -z "$data_config_given" ]; then
  cat <<'EOF'
input/ holds no competition yet. Put it there as shipped (see input/README.md):
  input/train.csv, input/test.csv, input/sample_submission.csv, input/train/*.wav, input/test/*.wav
or point at it:      bash run_all.sh --data-dir /path/to/competition
or describe another: bash run_all.sh --data-config configs/data/<name>.yaml  (docs/competition.md)

Meanwhile, running the demo on a small SYNTHETIC competition (rising vs falling chirps in noise)
into output/demo/ so that you can see every stage work.
EOF
  demo=1
fi

if [ -n "$demo" ]; then
  output_dir=${output_dir:-output/demo}
  data_dir=$output_dir/input
  data_config=configs/data/demo.yaml
  "$PYTHON" -m lib.data.demo "$data_dir"
  [ ${#experiments[@]} -gt 0 ] || experiments=(configs/demo.yaml)
fi

output_dir=${output_dir:-output}
if [ "$profile" = auto ]; then
  if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then profile=gpu; else profile=cpu; fi
fi
if [ ${#experiments[@]} -eq 0 ]; then  # the competition config's own list (one per line), else the profile's defaults
  # each entry beside the competition config when it is there, else from the project folder (configs/...)
  mapfile -t experiments < <("$PYTHON" -c "import os, sys, yaml
base = os.path.dirname(os.path.abspath(sys.argv[1]))
for e in (yaml.safe_load(open(sys.argv[1])) or {}).get('experiments') or []:
    e = os.path.expanduser(str(e))
    print(os.path.join(base, e) if os.path.isfile(os.path.join(base, e)) else e)" "$data_config")
fi
if [ ${#experiments[@]} -eq 0 ]; then
  case "$profile" in
    cpu) experiments=(configs/wave_cnn.yaml configs/zoo/hgb.yaml) ;;  # a network and gradient boosting; 04 blends them only when that wins
    gpu) experiments=(configs/cnn8.yaml configs/vgg.yaml) ;;
    *) echo "run_all.sh: --profile must be cpu or gpu" >&2; exit 2 ;;
  esac
fi
for e in "${experiments[@]}"; do  # before any stage runs
  [ -f "$e" ] || { echo "run_all.sh: experiment config $e not found (an entry of a competition config's experiments: is taken beside that file, else from the project folder $PWD; --experiments paths from where run_all.sh is started)" >&2; exit 2; }
done
echo "run_all: profile $profile; experiments: ${experiments[*]}; output: $output_dir"

timings=()
stage() {  # stage NAME COMMAND...: run, time, and stop the chain on failure
  local name=$1; shift
  local t0=$SECONDS
  echo; echo "=== $name ==="
  "$@"
  timings+=("$(printf '%-28s %5ds' "$name" $((SECONDS - t0)))")
}

t_all=$SECONDS
stage "00_prepare" "$PYTHON" 00_prepare.py "$data_config" ${data_dir:+--data-dir "$data_dir"} --output-dir "$output_dir"
# shellcheck disable=SC2086
stage "01_features" "$PYTHON" 01_features.py "${experiments[@]}" ${sets[@]+"${sets[@]}"} --output-dir "$output_dir" $force
if [ "$nproc" -gt 1 ]; then  # every experiment's folds at once, shared out by torchrun's ranks
  # shellcheck disable=SC2086
  stage "02_train ($nproc processes)" "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$nproc" \
    02_train.py "${experiments[@]}" ${sets[@]+"${sets[@]}"} --output-dir "$output_dir" $force
fi
names=""
for exp in "${experiments[@]}"; do
  name=$("$PYTHON" -m lib.cli name "$exp" ${sets[@]+"${sets[@]}"})  # the name 02/03 give the run
  names="$names $name"
  [ "$nproc" -gt 1 ] || stage "02_train $name" "$PYTHON" 02_train.py "$exp" ${sets[@]+"${sets[@]}"} --output-dir "$output_dir" $force
  stage "03_infer $name" "$PYTHON" 03_infer.py "$exp" ${sets[@]+"${sets[@]}"} --output-dir "$output_dir" $force
done
# shellcheck disable=SC2086
stage "04_ensemble" "$PYTHON" 04_ensemble.py $names --output-dir "$output_dir"

echo; echo "=== stage wall times ==="
printf '%s\n' "${timings[@]}"
printf '%-28s %5ds\n' "total" $((SECONDS - t_all))
[ -z "$demo" ] || echo "(SYNTHETIC demo competition: the scores above say nothing about real data)"
tool=leaderboard.py py=$PYTHON  # the paths below as typed from the caller's directory, if another than this one
if [ "$caller" != "$PWD" ]; then
  tool=$PWD/leaderboard.py
  case "$py" in /*) ;; */*) py=$PWD/$py ;; esac
  case "$output_dir" in /*) ;; *) output_dir=$PWD/$output_dir ;; esac
fi
if [ -f "$output_dir/submission.csv" ]; then
  echo "submission: $output_dir/submission.csv"
else  # no test set or no submission section: 04 said so; the blend's scores are in ensemble.json
  echo "no submission (the competition has no test set or no 'submission' section): scores in $output_dir/ensemble.json"
fi
# what to look at next (every score above is out of fold; a blend's, cross-fitted)
echo "next: $output_dir/ensemble/report.md (the blend, its members and the decision, OOF), each experiment's" \
     "$output_dir/models/<exp>/report/report.md, and $py $tool --output-dir $output_dir"
