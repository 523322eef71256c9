# Shared by every megajepa sbatch script: sourced, never run on its own.
#   - repo root + optional venv
#   - cluster network env (NCCL/OMP): the block to edit per cluster
#   - KEY=VALUE positional args -> script variables, anything else -> train.py overrides
#   - megajepa_train: `srun python megajepa/train.py ...`, USR1 -> checkpoint -> requeue
set -euo pipefail

# sbatch runs a copy of the script from the spool dir: the repo is where we submitted from.
MEGAJEPA_ROOT="${MEGAJEPA_ROOT:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
cd "$MEGAJEPA_ROOT"
if [[ -n "${MEGAJEPA_VENV:-}" ]]; then
  # shellcheck disable=SC1091
  source "$MEGAJEPA_VENV/bin/activate"
fi
PYTHON="${PYTHON:-python}"

# ---------------------------------------------------------------- per-cluster network settings
# Interface for NCCL's TCP bootstrap (and socket transport when there is no IB). Set it to the
# compute-fabric interface, e.g. ib0, bond0, enp65s0f0; "^lo,docker0" means "anything but these".
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker0}"
# 1 on clusters without InfiniBand/RoCE (falls back to sockets; slow across nodes).
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}"
# Restrict NCCL to the HCAs of the GPU fabric (skip storage/management NICs), e.g. mlx5_0,mlx5_1.
if [[ -n "${NCCL_IB_HCA:-}" ]]; then export NCCL_IB_HCA; fi
# RoCE needs the RoCEv2 GID index (usually 3); leave unset on native InfiniBand.
if [[ -n "${NCCL_IB_GID_INDEX:-}" ]]; then export NCCL_IB_GID_INDEX; fi
# Longer IB retry timeout survives a congested fabric instead of failing the collective.
export NCCL_IB_TIMEOUT="${NCCL_IB_TIMEOUT:-22}"
# INFO prints topology/transport choices: the first thing to look at when a job hangs at start.
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
# A failed rank aborts the collective (and the job) instead of hanging until the timeout.
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"
# One rank per GPU: give each its share of cores, not every core of the node.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"

# ---------------------------------------------------------------- arguments
# Script variables; each can come from `sbatch --export=ALL,KEY=VALUE` or a positional KEY=VALUE.
CONFIG="${CONFIG:-}"                              # YAML/JSON run config (empty: built-in defaults)
DS_CONFIG="${DS_CONFIG:-ds_configs/zero3.json}"   # DeepSpeed config
OUTPUT_DIR="${OUTPUT_DIR:-runs/${SLURM_JOB_NAME:-megajepa}}"  # stable across resubmits: resume=auto finds it
EXTRA_ARGS="${EXTRA_ARGS:-}"                      # space-separated key=value train overrides
TRAIN_SCRIPT="${TRAIN_SCRIPT:-megajepa/train.py}" # tests swap in a probe
MEGAJEPA_VARS=" CONFIG DS_CONFIG OUTPUT_DIR EXTRA_ARGS TRAIN_SCRIPT HF_DIR CKPT OUT "
TRAIN_OVERRIDES=()

megajepa_parse_args() {
  local a
  for a in "$@"; do
    if [[ "$a" == *=* && "$MEGAJEPA_VARS" == *" ${a%%=*} "* ]]; then
      printf -v "${a%%=*}" '%s' "${a#*=}"
    else
      TRAIN_OVERRIDES+=("$a")
    fi
  done
}

megajepa_require() {  # megajepa_require VAR...: fail before srun when a variable is empty
  local v
  for v in "$@"; do
    [[ -n "${!v:-}" ]] || { echo "[megajepa] error: $v is not set (pass $v=... or --export=ALL,$v=...)" >&2; exit 2; }
  done
}

# ---------------------------------------------------------------- training step
MEGAJEPA_REQUEUE=0
_megajepa_on_usr1() {
  # --signal=B:USR1@T reaches this shell T seconds before the time limit: tell every rank to
  # checkpoint (srun forwards USR1 to its tasks), then requeue once the step has exited.
  echo "[megajepa] USR1 at $(date +%T): forwarding to the step, will requeue" >&2
  MEGAJEPA_REQUEUE=1
  kill -USR1 "$MEGAJEPA_STEP_PID" 2>/dev/null || true
}

megajepa_train() {  # megajepa_train [override...]: one srun task per rank, resume=auto always
  local args=() extra=() rc=0
  if [[ -n "$CONFIG" ]]; then args+=(--config "$CONFIG"); fi
  if [[ -n "$DS_CONFIG" ]]; then args+=(--deepspeed_config "$DS_CONFIG"); fi
  read -r -a extra <<< "$EXTRA_ARGS"  # word-split on purpose: a string of overrides
  args+=("output_dir=$OUTPUT_DIR" resume=auto "${extra[@]}" "${TRAIN_OVERRIDES[@]}" "$@")
  echo "[megajepa] job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0}: nodes=${SLURM_JOB_NUM_NODES:-?}" \
       "tasks=${SLURM_NTASKS:-?} $TRAIN_SCRIPT ${args[*]}"
  trap _megajepa_on_usr1 USR1
  # srun does not inherit --cpus-per-task from sbatch since Slurm 22.05: pass it on.
  srun --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
       "$PYTHON" -u "$TRAIN_SCRIPT" "${args[@]}" &
  MEGAJEPA_STEP_PID=$!
  # `wait` returns early when a trapped signal arrives: keep waiting until the step is gone.
  while :; do
    wait "$MEGAJEPA_STEP_PID" && rc=0 || rc=$?
    kill -0 "$MEGAJEPA_STEP_PID" 2>/dev/null || break
  done
  trap - USR1
  # 75: the ranks stopped on SIGUSR1/SIGTERM and saved a checkpoint (megajepa/training/guards/preemption.py), even when
  # the signal went to the step rather than to this shell.
  if [[ "$MEGAJEPA_REQUEUE" == 1 || "$rc" == 75 ]]; then
    echo "[megajepa] step exited rc=$rc after USR1 or a checkpointed stop: requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  echo "[megajepa] step exited rc=$rc"
  return "$rc"
}
