#!/bin/bash
# Continued pretraining from a Hugging Face checkpoint directory (HF_DIR); otherwise as pretrain_8node.sh.
#   sbatch slurm/continue_pretrain.sh HF_DIR=/models/llama-1b [CONFIG=...] [OUTPUT_DIR=...] [key=value ...]
# After the first checkpoint, resume=auto takes precedence over init_from_hf on requeue.
#SBATCH --job-name=megajepa-continue
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
megajepa_require HF_DIR
megajepa_train "model.init_from_hf=$HF_DIR"
