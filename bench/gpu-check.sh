#!/usr/bin/env bash
# gpu-check.sh: the one command to run on a machine with an NVIDIA GPU.
#
#   bench/gpu-check.sh [--quick] [--no-build] [--build-dir DIR] [-j N]
#                      [--skip-sanitizers] [--full-sanitizers] [--skip-bench]
#                      [--skip-torch]
#
# Steps (each reported PASS/FAIL/SKIP; a failing step does not stop the
# later ones; the exit status is non-zero if any step failed):
#   1. environment: cuDNN and NCCL from the CUDA toolkit or from Python wheels
#      (nvidia.cudnn, nvidia.nccl), added to LD_LIBRARY_PATH; the card's
#      compute capability for BNORM_CUDA_ARCHITECTURES.
#   2. configure + build (-DBNORM_BUILD_TESTS=ON) in BUILD_DIR (default
#      build-gpu); with --no-build an existing build there is used as is.
#   2b. bench/sass_mlp.py over cuobjdump's SASS of libbnorm: the loads each
#      kernel's loop keeps in flight (skipped without cuobjdump).
#   3. ctest -L gpu --output-on-failure; then the Python binding's pytest
#      suite (python/tests) with $PYTHON's torch, CUDA variants included.
#   4. compute-sanitizer memcheck, racecheck, synccheck, initcheck over a few
#      GPU test programs, each on a few small cases (bnorm's kernels only).
#   4b. with --full-sanitizers: the same four tools over the whole GPU suite,
#      every test of every *_gpu program but the >2^31-element ones (label
#      huge), one program at a time, SAN_FULL_TIMEOUT seconds (default 7200)
#      per tool and program. How long it takes has not been measured yet
#      (hours, most likely: every kernel launch is instrumented); run it as a
#      step of its own, e.g. with --skip-sanitizers --skip-bench --skip-torch.
#   5. bnorm-bench (the full suite, or --quick), CSV in
#      bench/results/<date>-<card>.csv (<date>-<card>-quick.csv with --quick).
#   5b. bnorm-bench-fused (BN + add + ReLU: bnorm fused, bnorm unfused, cuDNN's
#      BN_ADD_ACTIVATION; --quick passed on), CSV beside it (-fused.csv).
#      Skipped with --skip-bench too.
#   5c. bnorm-bench-sync (synchronized batch norm on a one-rank NCCL
#      communicator against the local calls), CSV beside it (-sync.csv).
#      Skipped with --skip-bench too.
#   6. bench/torch_bench.py on the same cases, CSV beside it (-torch.csv),
#      with bnorm timed through the Python binding beside torch (--bnorm).
# Logs go to ${OUT:-/tmp}/gpu-check/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu}
QUICK=0
NO_BUILD=0
SKIP_SAN=0
FULL_SAN=0
SAN_FULL_TIMEOUT=${SAN_FULL_TIMEOUT:-7200} # seconds per tool and program (--full-sanitizers)
SKIP_BENCH=0
SKIP_TORCH=0
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
SAN_TIMEOUT=${SAN_TIMEOUT:-150}   # seconds per sanitizer run
CTEST_TIMEOUT=${CTEST_TIMEOUT:-900} # seconds per test
CTEST_JOBS=${CTEST_JOBS:-4}         # GPU tests run at once
PYTHON=${PYTHON:-python3}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --no-build) NO_BUILD=1 ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --build-dir=*) BUILD_DIR=${1#*=} ;;
    -j) JOBS=$2; shift ;;
    -j*) JOBS=${1#-j} ;;
    --skip-sanitizers) SKIP_SAN=1 ;;
    --full-sanitizers) FULL_SAN=1 ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --skip-torch) SKIP_TORCH=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$PWD/$BUILD_DIR ;; esac

LOG_DIR=${OUT:-/tmp}/gpu-check
mkdir -p "$LOG_DIR"
SUMMARY=$LOG_DIR/summary.txt
: >"$SUMMARY"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$CUDA_HOME/compute-sanitizer:$PATH"

# ---- step bookkeeping ----------------------------------------------------------------------
STEP_NAMES=()
STEP_RESULTS=()
STEP_TIMES=()
STEP_NOTES=()
FAILED=0

record() { # name result seconds note
  STEP_NAMES+=("$1"); STEP_RESULTS+=("$2"); STEP_TIMES+=("$3"); STEP_NOTES+=("$4")
  [[ $2 == FAIL ]] && FAILED=1
  printf '%-28s %-4s %5ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$SUMMARY"
  return 0
}

# step NAME LOGFILE CMD...: runs CMD with output to LOGFILE; PASS on status 0,
# SKIP on status 77 (the step's own "nothing to do here"), FAIL otherwise.
step() {
  local name=$1 log=$2 t0=$SECONDS rc=0
  shift 2
  echo "==> $name   (log: $log)"
  ( "$@" ) >"$log" 2>&1 || rc=$?
  local dt=$((SECONDS - t0))
  if [[ $rc -eq 0 ]]; then
    record "$name" PASS "$dt" "$(basename "$log")"
  elif [[ $rc -eq 77 ]]; then
    record "$name" SKIP "$dt" "$(tail -n 1 "$log" | cut -c1-80)"
  else
    echo "---- last lines of $log ----"
    tail -n 25 "$log" || true
    echo "----"
    local why="exit $rc"
    [[ $rc -eq 124 ]] && why="timed out"
    record "$name" FAIL "$dt" "$why; $(basename "$log")"
  fi
  return 0
}

# ---- 1. environment --------------------------------------------------------------------------
ENV_LOG=$LOG_DIR/env.txt
{
  echo "date: $(date -Is)"
  echo "host: $(hostname)"
  echo "repo: $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-git))"
  nvidia-smi 2>&1 || echo "nvidia-smi failed"
  nvcc --version 2>&1 || echo "nvcc not found"
} >"$ENV_LOG" 2>&1

python_pkg_dir() { # module -> its directory (namespace packages too), or nothing
  "$PYTHON" - "$1" 2>/dev/null <<'EOF' || true
import importlib, os, sys
try:
    m = importlib.import_module(sys.argv[1])
except Exception:
    sys.exit(0)
f = getattr(m, "__file__", None)
print(os.path.dirname(f) if f else list(m.__path__)[0])
EOF
}

# The environment as it came: PyTorch runs with it (it brings its own cuDNN,
# and a different one found first breaks it).
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
prepend_ld() { # a folder the dynamic linker does not search by itself
  case $1 in
    /lib|/lib64|/usr/lib|/usr/lib64|/lib/x86_64-linux-gnu|/usr/lib/x86_64-linux-gnu) return 0 ;;
  esac
  case ":${LD_LIBRARY_PATH:-}:" in *":$1:"*) return 0 ;; esac
  export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

CUDNN_LIB=""
CUDNN_INC=""
CUDNN_NOTE=""
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME/targets/x86_64-linux/lib" \
         /usr/lib/x86_64-linux-gnu /usr/lib64; do
  f=$(ls "$d"/libcudnn.so "$d"/libcudnn.so.9 2>/dev/null | head -n 1 || true)
  if [[ -n $f ]]; then CUDNN_LIB=$f; break; fi
done
for d in "$CUDA_HOME/include" "$CUDA_HOME/targets/x86_64-linux/include" /usr/include \
         /usr/include/x86_64-linux-gnu; do
  if [[ -f $d/cudnn.h ]]; then CUDNN_INC=$d; break; fi
done
if [[ -n $CUDNN_LIB && -n $CUDNN_INC ]]; then
  CUDNN_NOTE="cuDNN from the system: $CUDNN_LIB"
  prepend_ld "$(dirname "$CUDNN_LIB")"
else
  WHEEL=$(python_pkg_dir nvidia.cudnn)
  if [[ -n $WHEEL && -d $WHEEL/lib ]]; then
    f=""
    for g in "$WHEEL"/lib/libcudnn.so "$WHEEL"/lib/libcudnn.so.[0-9]*; do
      if [[ -e $g && $g =~ /libcudnn\.so(\.[0-9]+)?$ ]]; then f=$g; break; fi
    done
    [[ -z $CUDNN_LIB && -n $f ]] && CUDNN_LIB=$f
    [[ -z $CUDNN_INC && -f $WHEEL/include/cudnn.h ]] && CUDNN_INC=$WHEEL/include
    prepend_ld "$WHEEL/lib"
    CUDNN_NOTE="cuDNN from the Python wheel: $WHEEL"
  fi
fi
[[ -z $CUDNN_NOTE ]] && CUDNN_NOTE="cuDNN NOT FOUND (the cuDNN test and the bench are not built)"

NCCL_NOTE="NCCL not found (not needed by bnorm)"
for d in "$CUDA_HOME/lib64" /usr/lib/x86_64-linux-gnu; do
  if ls "$d"/libnccl.so* >/dev/null 2>&1; then NCCL_NOTE="NCCL from $d"; break; fi
done
if [[ $NCCL_NOTE == NCCL\ not* ]]; then
  WHEEL=$(python_pkg_dir nvidia.nccl)
  if [[ -n $WHEEL && -d $WHEEL/lib ]]; then
    prepend_ld "$WHEEL/lib"
    NCCL_NOTE="NCCL from the Python wheel: $WHEEL"
  fi
fi

# The card: compute capability and a short name (h100, h200, ...).
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .' || true)
if [[ ! $ARCH =~ ^[0-9]+$ ]]; then
  ARCH=$("$CUDA_HOME/bin/__nvcc_device_query" 2>/dev/null | tr ';, ' '\n\n\n' | grep -E '^[0-9]+$' | head -n 1 || true)
fi
if [[ ! $ARCH =~ ^[0-9]+$ ]]; then
  ARCH=$("$PYTHON" -c 'import torch; p = torch.cuda.get_device_capability(); print(p[0] * 10 + p[1])' 2>/dev/null || true)
fi
ARCH_NOTE=""
if [[ ! $ARCH =~ ^[0-9]+$ ]]; then
  ARCH=90
  ARCH_NOTE=" (could not detect; assumed)"
fi
# sm_90 and later have arch-specific features: build the "a" variant too? No:
# plain sm_XX runs everywhere of that major; keep it simple.
CARD=$(echo "$GPU_NAME" | tr '[:upper:]' '[:lower:]' |
       grep -oE '(gh200|gb200|h100|h200|h800|h20|b200|b100|a100|a800|a10g|a10|a30|a40|l40s|l40|l4|v100|t4)' |
       head -n 1 || true)
if [[ -z $CARD ]]; then
  CARD=$(echo "${GPU_NAME:-unknown-gpu}" | tr '[:upper:]' '[:lower:]' | sed 's/^nvidia //; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
fi
{
  echo "gpu: ${GPU_NAME:-none} -> card '$CARD', sm_$ARCH$ARCH_NOTE"
  echo "$CUDNN_NOTE (lib: ${CUDNN_LIB:-none}, include: ${CUDNN_INC:-none})"
  echo "$NCCL_NOTE"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} | tee -a "$ENV_LOG"
if [[ -z $GPU_NAME ]]; then
  record "environment" FAIL 0 "nvidia-smi sees no GPU"
else
  record "environment" PASS 0 "$CARD sm_$ARCH$ARCH_NOTE; ${CUDNN_NOTE%%:*}"
fi

# ---- 2. configure + build ----------------------------------------------------------------------
do_build() {
  local args=(-S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_GPU=ON
              -DBNORM_BUILD_TESTS=ON "-DBNORM_CUDA_ARCHITECTURES=$ARCH")
  [[ -n $CUDNN_LIB ]] && args+=("-DBNORM_CUDNN_LIBRARY=$CUDNN_LIB")
  [[ -n $CUDNN_INC ]] && args+=("-DBNORM_CUDNN_INCLUDE=$CUDNN_INC")
  [[ -x $CUDA_HOME/bin/nvcc ]] && args+=("-DCMAKE_CUDA_COMPILER=$CUDA_HOME/bin/nvcc")
  echo "cmake ${args[*]}"
  if ! cmake "${args[@]}"; then
    if ! ls /usr/lib/x86_64-linux-gnu/libboost_context* /usr/lib64/libboost_context* \
         /usr/local/lib/libboost_context* >/dev/null 2>&1; then
      echo "hint: Boost.Context is not installed here; the top-level CMakeLists.txt requires it"
      echo "      (for the CPU emulator). Build where it is, bring the build folder to the same"
      echo "      path here, and run this script with --no-build."
    fi
    return 1
  fi
  cmake --build "$BUILD_DIR" -j "$JOBS"
}
if [[ $NO_BUILD -eq 1 && -f $BUILD_DIR/CMakeCache.txt ]]; then
  record "build" SKIP 0 "--no-build: using $BUILD_DIR"
  built_arch=$(grep -E '^BNORM_CUDA_ARCHITECTURES:' "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2 || true)
  if [[ -n $built_arch && ";$built_arch;" != *";$ARCH;"* ]]; then
    echo "warning: $BUILD_DIR was built for '$built_arch', the card is sm_$ARCH" | tee -a "$SUMMARY"
  fi
elif [[ $NO_BUILD -eq 1 ]]; then
  record "build" FAIL 0 "--no-build but no build in $BUILD_DIR"
else
  step "build" "$LOG_DIR/build.log" do_build
fi

# ---- 2b. loads in flight, from the SASS of the built library ------------------------------------
# bench/sass_mlp.py over cuobjdump's SASS of libbnorm for the card (see
# bench/NOTES.md, 2026-12-03): a record beside the timings of how many loads
# each kernel's loop keeps in flight. Needs no run; skipped without cuobjdump.
run_sass_mlp() {
  command -v cuobjdump >/dev/null || { echo "no cuobjdump on PATH: skipped"; return 77; }
  [[ -f $BUILD_DIR/libbnorm.so ]] || { echo "no $BUILD_DIR/libbnorm.so"; return 1; }
  cuobjdump -sass ${ARCH:+-arch sm_$ARCH} "$BUILD_DIR/libbnorm.so" | "$PYTHON" "$ROOT/bench/sass_mlp.py"
}
step "SASS loads in flight" "$LOG_DIR/sass-mlp.txt" run_sass_mlp

# ---- 3. the GPU tests ---------------------------------------------------------------------------
run_ctest() {
  [[ -f $BUILD_DIR/CTestTestfile.cmake ]] || { echo "no tests in $BUILD_DIR"; return 1; }
  cd "$BUILD_DIR"
  local listed
  listed=$(ctest -N -L gpu | grep -cE '^ *Test +#' || true)
  echo "tests labelled gpu: $listed"
  [[ $listed -gt 0 ]] || { echo "no test is labelled gpu (were the GPU tests built?)"; return 1; }
  # Each discovered test is its own process (CUDA and cuDNN start-up each
  # time): a few at once keep this short; they are small enough to share the GPU.
  ctest -L gpu --output-on-failure --timeout "$CTEST_TIMEOUT" -j "$CTEST_JOBS"
}
step "ctest -L gpu" "$LOG_DIR/ctest-gpu.log" run_ctest

# The Python binding's tests (python/tests) with $PYTHON's torch: their CUDA
# variants run here (ctest's emu.python runs Debian's CPU-only torch).
run_pytests() {
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH \
    "$PYTHON" -c 'import torch, pytest; assert torch.cuda.is_available()' 2>/dev/null ||
    { echo "$PYTHON has no PyTorch with CUDA, or no pytest: skipped"; return 77; }
  [[ -f $BUILD_DIR/libbnorm.so ]] || { echo "no $BUILD_DIR/libbnorm.so"; return 1; }
  cd "$ROOT"
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH BNORM_LIBRARY_DIR=$BUILD_DIR PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider python/tests
}
step "python binding (pytest)" "$LOG_DIR/pytest.log" run_pytests

# ---- 4. compute-sanitizer ------------------------------------------------------------------------
# A handful of tests per program: small cases first (the standard shapes'
# small ones), else the first few listed.
pick_tests() { # exe -> a --gtest_filter value (empty if the program lists no tests)
  local exe=$1 all
  all=$("$exe" --gtest_list_tests 2>/dev/null | awk '
    /^[^ ]/ { suite = $1; next }
    /^  [^ ]/ { print suite $1 }')
  [[ -n $all ]] || return 0
  local picked
  # small standard shapes in several layouts and types (and the persistent
  # kernels' odd ones, and one past the registers, for the stage in shared
  # memory), at most three per test, twelve in all
  picked=$(echo "$all" |
           grep -E '(NCHW_f32_n5_c37_s13|NHWC_f16_n5_c37_s13|NHWC_bf16_n2_c3_s5|NCHW_f16_n3_c7_s1|NHWC_f32_n2_c64_s9|NCHW_f32_n3_c7_s11|NHWC_bf16_n33_c17_s65|NHWC_f16_n40009_c50_s1)$' |
           awk '{ key = $0; sub(/\/[^\/]*$/, "", key); if (n[key]++ < 3) print }' | head -n 12 || true)
  if [[ $(echo "$picked" | grep -c . || true) -lt 3 ]]; then
    picked=$( (echo "$picked"; echo "$all" | head -n 6) | grep . | sort -u | head -n 8)
  fi
  echo "$picked" | paste -sd: -
}

run_sanitizer() { # tool
  local tool=$1 rc=0 ran=0
  command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not found"; return 1; }
  local progs=()
  for p in test_forward_gpu test_backward_gpu test_running_gpu test_cudnn_gpu; do
    [[ -x $BUILD_DIR/tests/$p ]] && progs+=("$BUILD_DIR/tests/$p")
  done
  [[ ${#progs[@]} -gt 0 ]] || { echo "no GPU test programs in $BUILD_DIR/tests"; return 1; }
  # cuDNN's own kernels are not ours to check: only kernels whose names hold
  # "bnorm" are instrumented.
  local budget_each=$((SAN_TIMEOUT / ${#progs[@]}))
  [[ $budget_each -lt 30 ]] && budget_each=30
  for exe in "${progs[@]}"; do
    local filter
    filter=$(pick_tests "$exe")
    [[ -n $filter ]] || { echo "== $(basename "$exe"): lists no tests, skipped"; continue; }
    echo "== $tool: $(basename "$exe") --gtest_filter=$filter"
    ran=1
    local r=0 extra=()
    # leaks: bnorm's own tests only (cuDNN keeps allocations of its own)
    [[ $tool == memcheck && $exe != *cudnn* ]] && extra=(--leak-check full)
    timeout "$budget_each" compute-sanitizer --tool "$tool" --error-exitcode 86 \
      --kernel-name kns=bnorm "${extra[@]}" \
      "$exe" --gtest_filter="$filter" --gtest_brief=1 || r=$?
    if [[ $r -ne 0 ]]; then
      echo "== $(basename "$exe"): exit $r$([[ $r -eq 86 ]] && echo ' (sanitizer errors)')$([[ $r -eq 124 ]] && echo ' (timed out)')"
      rc=1
    fi
  done
  [[ $ran -eq 1 ]] || { echo "no program had tests to run"; return 1; }
  return $rc
}
if [[ $SKIP_SAN -eq 1 ]]; then
  record "compute-sanitizer" SKIP 0 "--skip-sanitizers"
else
  for tool in memcheck racecheck synccheck initcheck; do
    step "sanitizer $tool" "$LOG_DIR/sanitizer-$tool.log" run_sanitizer "$tool"
  done
fi

# ---- 4b. compute-sanitizer over the whole GPU suite (--full-sanitizers) ----------------------------
run_sanitizer_full() { # tool
  local tool=$1 rc=0 ran=0
  command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not found"; return 1; }
  local exe
  for exe in "$BUILD_DIR"/tests/*_gpu; do
    [[ -x $exe && -f $exe ]] || continue
    ran=1
    local r=0 extra=() t0=$SECONDS
    [[ $tool == memcheck && $exe != *cudnn* ]] && extra=(--leak-check full)
    echo "== $tool: $(basename "$exe") (all tests but HugeTensor)"
    timeout "$SAN_FULL_TIMEOUT" compute-sanitizer --tool "$tool" --error-exitcode 86 \
      --kernel-name kns=bnorm "${extra[@]}" \
      "$exe" --gtest_filter='-*HugeTensor*' --gtest_brief=1 || r=$?
    echo "== $(basename "$exe"): exit $r after $((SECONDS - t0))s$([[ $r -eq 86 ]] && echo ' (sanitizer errors)')$([[ $r -eq 124 ]] && echo ' (timed out)')"
    [[ $r -ne 0 ]] && rc=1
  done
  [[ $ran -eq 1 ]] || { echo "no *_gpu test programs in $BUILD_DIR/tests"; return 1; }
  return $rc
}
if [[ $FULL_SAN -eq 1 ]]; then
  for tool in memcheck racecheck synccheck initcheck; do
    step "full sanitizer $tool" "$LOG_DIR/sanitizer-full-$tool.log" run_sanitizer_full "$tool"
  done
fi

# ---- 5. the benchmark -----------------------------------------------------------------------------
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
SUFFIX=""
[[ $QUICK -eq 1 ]] && SUFFIX="-quick"
BENCH_CSV=$RESULTS/$(date +%F)-$CARD$SUFFIX.csv
TORCH_CSV=$RESULTS/$(date +%F)-$CARD$SUFFIX-torch.csv
FUSED_CSV=$RESULTS/$(date +%F)-$CARD$SUFFIX-fused.csv
SYNC_CSV=$RESULTS/$(date +%F)-$CARD$SUFFIX-sync.csv
run_bench() {
  local exe=$BUILD_DIR/bench/bnorm-bench
  [[ -x $exe ]] || { echo "$exe was not built (cuDNN missing?)"; return 1; }
  local args=(--csv "$BENCH_CSV")
  [[ $QUICK -eq 1 ]] && args+=(--quick)
  "$exe" "${args[@]}"
}
if [[ $SKIP_BENCH -eq 1 ]]; then
  record "bnorm-bench" SKIP 0 "--skip-bench"
else
  step "bnorm-bench$SUFFIX" "$LOG_DIR/bench.log" run_bench
  cp -f "$LOG_DIR/bench.log" "$RESULTS/$(date +%F)-$CARD$SUFFIX.txt" 2>/dev/null || true
fi

# ---- 5b. the fused-epilogue benchmark ----------------------------------------------------------------
run_bench_fused() {
  local exe=$BUILD_DIR/bench/bnorm-bench-fused
  [[ -x $exe ]] || { echo "$exe was not built (cuDNN missing?)"; return 1; }
  local args=(--csv "$FUSED_CSV")
  [[ $QUICK -eq 1 ]] && args+=(--quick)
  "$exe" "${args[@]}"
}
if [[ $SKIP_BENCH -eq 1 ]]; then
  record "bnorm-bench-fused" SKIP 0 "--skip-bench"
else
  step "bnorm-bench-fused$SUFFIX" "$LOG_DIR/bench-fused.log" run_bench_fused
  cp -f "$LOG_DIR/bench-fused.log" "$RESULTS/$(date +%F)-$CARD$SUFFIX-fused.txt" 2>/dev/null || true
fi

# ---- 5c. the synchronized path's overhead --------------------------------------------------------------
run_bench_sync() {
  local exe=$BUILD_DIR/bench/bnorm-bench-sync
  [[ -x $exe ]] || { echo "$exe was not built (NCCL missing?)"; return 1; }
  local args=(--csv "$SYNC_CSV")
  [[ $QUICK -eq 1 ]] && args+=(--reps 10)
  "$exe" "${args[@]}"
}
if [[ $SKIP_BENCH -eq 1 ]]; then
  record "bnorm-bench-sync" SKIP 0 "--skip-bench"
else
  step "bnorm-bench-sync$SUFFIX" "$LOG_DIR/bench-sync.log" run_bench_sync
  cp -f "$LOG_DIR/bench-sync.log" "$RESULTS/$(date +%F)-$CARD$SUFFIX-sync.txt" 2>/dev/null || true
fi

run_torch() {
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH \
    "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null ||
    { echo "PyTorch with CUDA is not available: skipped"; return 77; }
  local args=(--csv "$TORCH_CSV")
  [[ $QUICK -eq 1 ]] && args+=(--quick)
  [[ -s $BENCH_CSV ]] && args+=(--cases-from "$BENCH_CSV" --merge-out "${BENCH_CSV%.csv}-merged.csv")
  # bnorm through the Python binding beside torch, when the build has it
  [[ -f $BUILD_DIR/libbnorm.so ]] && args+=(--bnorm)
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH PYTHONUNBUFFERED=1 BNORM_LIBRARY_DIR=$BUILD_DIR \
    "$PYTHON" "$ROOT/bench/torch_bench.py" "${args[@]}"
}
if [[ $SKIP_TORCH -eq 1 ]]; then
  record "torch_bench" SKIP 0 "--skip-torch"
else
  step "torch_bench$SUFFIX" "$LOG_DIR/torch.log" run_torch
fi

# ---- summary -----------------------------------------------------------------------------------------
echo
echo "==================== gpu-check summary ===================="
echo "card: ${GPU_NAME:-none} (sm_$ARCH)   build: $BUILD_DIR"
for i in "${!STEP_NAMES[@]}"; do
  printf '  %-4s %-26s %5ss  %s\n' "${STEP_RESULTS[$i]}" "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}" "${STEP_NOTES[$i]}"
done
if [[ -f $LOG_DIR/bench.log ]]; then
  echo "-- bnorm-bench:"
  sed -n '/^geometric-mean speedup/,$p' "$LOG_DIR/bench.log" | grep -v '^$' | head -n 14 | sed 's/^/   /'
  mism=$(grep -c 'MISMATCH\|bnorm-error' "$LOG_DIR/bench.log" || true)
  [[ $mism -gt 0 ]] && echo "   $mism line(s) with MISMATCH or bnorm-error in bench.log"
fi
if [[ -f $LOG_DIR/bench-fused.log ]]; then
  echo "-- bnorm-bench-fused:"
  sed -n '/^geometric-mean speedups of bnorm fused/,/^$/p' "$LOG_DIR/bench-fused.log" | grep -v '^$' | head -n 4 | sed 's/^/   /'
  mism=$(grep -c 'MISMATCH\|bnorm-error\|^FAILED' "$LOG_DIR/bench-fused.log" || true)
  [[ $mism -gt 0 ]] && echo "   $mism line(s) with MISMATCH, bnorm-error or FAILED in bench-fused.log"
fi
if [[ -f $LOG_DIR/bench-sync.log ]]; then
  echo "-- bnorm-bench-sync (sync us / local us per case and op):"
  grep -E '^(NCHW|NHWC) ' "$LOG_DIR/bench-sync.log" | awk '{printf "   %s %s %s %s %-9s %s\n", $1, $2, $3, $4, $5, $9}' | head -n 16
  mism=$(grep -c 'MISMATCH' "$LOG_DIR/bench-sync.log" || true)
  [[ $mism -gt 0 ]] && echo "   $mism line(s) with MISMATCH in bench-sync.log"
fi
if [[ -f $LOG_DIR/torch.log ]]; then
  echo "-- torch_bench:"
  grep -E '^(geometric|  (fwd_|bwd))' "$LOG_DIR/torch.log" | head -n 6 | sed 's/^/   /' || true
fi
[[ -f $BENCH_CSV ]] && echo "results: $BENCH_CSV"
[[ -f $TORCH_CSV ]] && echo "         $TORCH_CSV"
[[ -f $FUSED_CSV ]] && echo "         $FUSED_CSV"
echo "logs: $LOG_DIR"
if [[ $FAILED -ne 0 ]]; then
  echo "RESULT: FAIL"
  exit 1
fi
echo "RESULT: PASS"
exit 0
