#!/usr/bin/env bash
# The device check, as one script: chapter 2's full-profile smoke (per-step times, an
# estimate of the full profile's GPU time) and the benchmarks on CUDA.
#
#   OUT=<folder> bash benchmarks/gpu_check.sh        (from the repository root, on a GPU machine)
#
# Needs python3 with torch (CUDA), e3nn, numpy, scipy, pandas, tqdm; equivlib is read
# from the working tree (PYTHONPATH), not installed.  The full-profile data sets must be
# in data/cache (generate them on a CPU first: python -m equivlib.data.<forces|proteins|voxels>
# --profile full) because the GPU machine has no RDKit or tblite.  Every step has its own
# time limit, so one slow step cannot eat the others' time.
set -u
OUT=${OUT:-benchmarks/results}
PY=${PYTHON:-python3}
THREADS=${THREADS:-8}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import sys, torch, e3nn; print('python', sys.version.split()[0], 'torch', torch.__version__, 'e3nn', e3nn.__version__, 'cuda', torch.cuda.is_available())"
  ls -la data/cache
} 2>&1 | tee "$OUT/check.log"
step() {  # step <seconds> <name> <command...>
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$OUT/check.log"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/check.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$OUT/check.log"
}
step "${PROFILE_LIMIT:-240}" profile $PY benchmarks/bench_profile.py --profile full --device cuda \
  --steps "${SMOKE_STEPS:-60}" --threads "$THREADS" --out "$OUT/profile-full-cuda.json" ${ONLY:+--only $ONLY}
step 60 twirl $PY benchmarks/bench_twirl.py --device cuda --no-memory --threads "$THREADS" --out "$OUT/twirl-cuda.json"
step 75 monitor $PY benchmarks/bench_monitor.py --device cuda --threads "$THREADS" --steps 200 --every 20 \
  --repeats 1 --out "$OUT/monitor-cuda.json"
step 30 landscape $PY benchmarks/bench_landscape.py --device cuda --repeats 3
