#!/bin/bash
# Convert a megajepa (DeepSpeed ZeRO-3) checkpoint into a Hugging Face model directory, on one node.
#   sbatch slurm/convert_to_hf.sh CKPT=runs/x/checkpoints/latest OUT=hf/x
#SBATCH --job-name=megajepa-convert
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out
#SBATCH --error=%x-%j.err
#SBATCH --open-mode=append
source "${MEGAJEPA_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/common.sh"
megajepa_parse_args "$@"
megajepa_require CKPT OUT
"$PYTHON" tools/convert_to_hf.py --checkpoint "$CKPT" --output "$OUT" "${TRAIN_OVERRIDES[@]}"
