#!/usr/bin/env bash
# SLURM example: pretraining on 2 nodes x 8 GPUs. Submit with `sbatch launch/slurm.sh`.
#SBATCH --job-name=missrec-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node; accelerate starts the 8 workers
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
source .venv/bin/activate

MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_IP
# Each node's launcher gets its own rank from SLURM_NODEID.
srun bash -c 'accelerate launch \
  --config_file launch/multinode-2x8.yaml \
  --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * 8)) \
  --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_IP" --main_process_port 29500 \
  pretrain/run.py --config pretrain/configs/fhckm.yaml "$@"' _ "$@"
