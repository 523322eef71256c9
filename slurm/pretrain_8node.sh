#!/bin/bash
# Pretrain on 8 nodes x 8 GPUs with DeepSpeed ZeRO-3; resumes from OUTPUT_DIR/checkpoints when present.
#   sbatch slurm/pretrain_8node.sh [CONFIG=f.yaml] [DS_CONFIG=f.json] [OUTPUT_DIR=runs/x] [key=value ...]
# Command-line sbatch options override the lines below (e.g. --nodes=2, --gpus-per-node=0 on CPU).
#SBATCH --job-name=megajepa-pretrain
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --exclusive
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
#SBATCH --error=%x-%j.err
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
source "${MEGAJEPA_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/common.sh"
megajepa_parse_args "$@"
megajepa_train
