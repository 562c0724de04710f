#!/usr/bin/env bash
# The test command: installs what is missing, builds with warnings as errors, runs every
# test with ctest, then (unless --quick) rebuilds under AddressSanitizer and
# UndefinedBehaviorSanitizer and runs the tests again, builds the scheduler tests under
# ThreadSanitizer, and fuzzes the readers of untrusted bytes for about a minute
# (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

# Each phase says how long it took, so a CI log shows where its 50 minutes go.
phase_start=$SECONDS
phase_done() { echo "== $1 took $((SECONDS - phase_start)) s (total $SECONDS s)"; phase_start=$SECONDS; }

bash scripts/install_deps.sh
phase_done "installing"
BUILD_DIR=build bash scripts/build.sh
phase_done "building"
(cd build && ctest --output-on-failure -j 2 --timeout 900)
phase_done "tests"

if [ $quick -eq 0 ]; then
  echo "== sanitizers: address,undefined"
  BUILD_DIR=build-asan bash scripts/build.sh -DDEEPLAB_SANITIZE=address,undefined \
    -DCMAKE_BUILD_TYPE=Debug
  # LibTorch keeps process-lifetime registries that LeakSanitizer would report at exit.
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # Left out here (docs/testing.md): tests that are LibTorch arithmetic on our model graphs
  # or tensors (LibTorch is not built with the sanitizers, and the same code of ours runs
  # sanitized in the other model, batch path and engine tests), which a Debug build makes the
  # slowest; and most tests of the command-line clients and tools, each of which starts its
  # own sanitized cluster (about 8 s) to check exit codes and files. Two `deeplab` tests and
  # one `deeplab-bench` test keep the clients' code under the sanitizers.
  libtorch_arithmetic='ModelTest\.MultiplyAddsNearTheModelZooFigure|TrainerTest\.AShortRunLowersTheLossAndWritesLoadableWeights|EagerMirrorTest\..*|Geometries/UpsampleArgmaxTest\.TensorOpsGiveTheSameLabelsAsTheCpuPath/.*'
  client_cli='ClientCliTest\.(HelpAndBadCommandLines|ModelsListsTheTestWeightSets|AMissingFileFailsAloneAndTheOthersAreWritten|NoOverlayWritesLabelsAndReportOnly|ACorruptImageIsInvalidArgumentAndTheOthersAreWritten|ProgressBarOnlyOnATerminal|AnUnknownWeightSetSendsNothing|AnUnreachableServerIsExitThree|AGatewayWithoutWorkersIsExitThreeNotFour|WaitForAReadyModelAndForOneThatIsNot|UnavailableForEveryImageIsExitThree)'
  bench_cli='BenchProcessTest\.(ConcurrencyStepsReportEveryRequestInJson|TableForPeople|ExitCodesForUnknownWeightSetsUnreachableServersAndBadFlags|DirectToWorker|DirectToWorkerExitCodes|InProcessFindsTheCeiling)'
  tools='WorkerProcessTest\.ACudaWorkerExportsItsGpusMemoryFromNvml|GatewayProcessTest\.WorkersNeededRisesWhenRequestsQueue'
  (cd build-asan && ctest --output-on-failure -j 2 --timeout 1800 \
    -E "^($libtorch_arithmetic|$client_cli|$bench_cli|$tools)\$")
  phase_done "sanitizers: address,undefined (build and tests)"
fi

if [ $quick -eq 0 ]; then
  # Only the scheduler's tests: it is shared by the gateway's threads and depends on Abseil
  # only. LibTorch and gRPC are not built with TSan and would report their own internals;
  # Abseil is not either, see scheduler/annotated_mutex_lock.h.
  echo "== sanitizers: thread (scheduler tests)"
  mkdir -p build-tsan
  cmake -S . -B build-tsan -G Ninja -DDEEPLAB_WERROR=ON -DDEEPLAB_SANITIZE=thread \
    >build-tsan/configure.log 2>&1 || { cat build-tsan/configure.log; exit 1; }
  cmake --build build-tsan --target scheduler_test -j "${JOBS:-2}"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/tests/scheduler/scheduler_test
  phase_done "sanitizers: thread"

  # Every reader of untrusted bytes (images, raw pixels, config.pbtxt, checkpoints, Keras
  # HDF5) under libFuzzer for about a minute in all; see scripts/fuzz.sh.
  echo "== fuzzing (libFuzzer, ASan/UBSan)"
  bash scripts/fuzz.sh
  phase_done "fuzzing"
fi
