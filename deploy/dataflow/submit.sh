#!/usr/bin/env bash
# Submit `c2scribe run` to Google Cloud Dataflow: DataflowRunner (Runner v2), SDK container =
# the c2scribe worker image. Runbook: deploy/dataflow/README.md. Parameters come from the
# environment:
#
#   PROJECT        Google Cloud project id                                            required
#   REGION         Dataflow region (europe-west1, ...)                                required
#   TEMP_LOCATION  gs://bucket/tmp: Dataflow's temporary and staging files            required
#   IMAGE          the worker image, pushed where the workers can pull it             required
#   INPUT          capture patterns, space-separated (gs://bucket/pcaps/**)           required
#   OUTPUT         output directory (gs://bucket/c2scribe/run-1)                      required
#   JOB_NAME       Dataflow job name (default c2scribe-YYYYMMDD-HHMMSS)
#   WORKER_HARNESS_THREADS  bundles a worker VM runs at once (default 1: one unit at a time)
#   MACHINE_TYPE   worker machine type (default: Dataflow's)
#   MAX_NUM_WORKERS  autoscaling ceiling (default: Dataflow's)
#   DECODERS, SENSOR_PATTERN, EXTRA_ARGS, PYTHON, BUILD_IMAGE, PUSH_IMAGE, DRY_RUN: see
#   deploy/README.md
set -euo pipefail
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

need PROJECT "the Google Cloud project id"
need REGION "the Dataflow region, e.g. europe-west1"
need TEMP_LOCATION "a gs:// directory for Dataflow's temporary and staging files"
need IMAGE "the worker image, e.g. REGISTRY/PROJECT/c2scribe-worker:TAG"
case $TEMP_LOCATION in
    gs://*) ;;
    *) die "TEMP_LOCATION=$TEMP_LOCATION: must be a gs:// path" ;;
esac
c2scribe_args
urls_only "Dataflow workers see no local directory: use gs:// (or s3://) paths"
THREADS=${WORKER_HARNESS_THREADS:-1}
case $THREADS in
    '' | *[!0-9]* | 0) die "WORKER_HARNESS_THREADS=$THREADS: a number, 1 or more" ;;
esac

RUNNER_ARGS=(--runner=DataflowRunner "--project=$PROJECT" "--region=$REGION"
             "--temp_location=$TEMP_LOCATION"
             "--job_name=${JOB_NAME:-c2scribe-$(date -u +%Y%m%d-%H%M%S)}"
             "--sdk_container_image=$IMAGE" --sdk_location=container
             --experiments=use_runner_v2
             "--number_of_worker_harness_threads=$THREADS")
if [ -n "${MACHINE_TYPE:-}" ]; then
    RUNNER_ARGS+=("--machine_type=$MACHINE_TYPE")
fi
if [ -n "${MAX_NUM_WORKERS:-}" ]; then
    RUNNER_ARGS+=("--max_num_workers=$MAX_NUM_WORKERS")
fi

check_versions
# DataflowRunner and gs:// need Beam's gcp extra on this machine too.
if ! "$PYTHON" -c 'import importlib.util, sys
def has(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False
sys.exit(not (has("apitools") and has("google.cloud.storage")))' 2> /dev/null; then
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "$SCRIPT: warning: $PYTHON lacks apache-beam[gcp] (needed to submit)" >&2
    else
        die "$PYTHON lacks Beam's gcp extra: pip install 'apache-beam[gcp]==$(dockerfile_arg BEAM_VERSION)'"
    fi
fi
build_image
run "$PYTHON" "${RUN_ARGS[@]}" "${RUNNER_ARGS[@]}" "${EXTRA[@]}"
