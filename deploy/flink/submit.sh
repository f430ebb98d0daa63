#!/usr/bin/env bash
# Submit `c2scribe run` to a Flink cluster: FlinkRunner (portable), SDK harness = the c2scribe
# worker image. Runbook: deploy/flink/README.md. Parameters come from the environment:
#
#   INPUT          capture patterns, space-separated (s3://bucket/pcaps/**)           required
#   OUTPUT         output directory (s3://bucket/c2scribe/run-1)                       required
#   FLINK_MASTER   JobManager REST address, host:8081 (SUBMIT=uber_jar|job_server)     required
#   IMAGE          worker image REGISTRY/c2scribe-worker:TAG (ENVIRONMENT=docker, BUILD_IMAGE=1)
#   SUBMIT         uber_jar (default: jar uploaded through the REST API, no Java here)
#                  | job_server (Beam's Flink job server started here: Java, FLINK_VERSION)
#                  | endpoint (a running Beam Flink job server container at JOB_ENDPOINT)
#   FLINK_VERSION  the cluster's Flink major.minor (SUBMIT=job_server)
#   JOB_ENDPOINT   host:8099 of the job server (SUBMIT=endpoint)
#   FLINK_JOB_SERVER_JAR  a local copy of the Beam Flink job server jar (no download)
#   ENVIRONMENT    docker (default: task managers start IMAGE with docker)
#                  | external (a worker pool of IMAGE next to each task manager)
#   WORKER_POOL    the worker pool as seen from a task manager (default localhost:50000)
#   SDK_WORKER_PARALLELISM  SDK harness processes per task manager: its task slots (default 1)
#   PARALLELISM    Flink parallelism of the job (default: the cluster's)
#   DECODERS, SENSOR_PATTERN, EXTRA_ARGS, PYTHON, BUILD_IMAGE, PUSH_IMAGE, DRY_RUN: see
#   deploy/README.md
set -euo pipefail
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

SUBMIT=${SUBMIT:-uber_jar}
one_of SUBMIT uber_jar job_server endpoint
c2scribe_args
portable_env_args

case $SUBMIT in
    uber_jar)
        need FLINK_MASTER "the Flink JobManager REST address, e.g. flink-jobmanager:8081"
        RUNNER_ARGS=(--runner=FlinkRunner "--flink_master=$FLINK_MASTER" --flink_submit_uber_jar)
        ;;
    job_server)
        need FLINK_MASTER "the Flink JobManager REST address, e.g. flink-jobmanager:8081"
        need FLINK_VERSION "the cluster's Flink version, major.minor (e.g. 1.19)"
        RUNNER_ARGS=(--runner=FlinkRunner "--flink_master=$FLINK_MASTER"
                     "--flink_version=$FLINK_VERSION")
        ;;
    endpoint)
        need JOB_ENDPOINT "the Beam Flink job server, host:8099"
        RUNNER_ARGS=(--runner=PortableRunner "--job_endpoint=$JOB_ENDPOINT")
        ;;
esac
if [ -n "${FLINK_JOB_SERVER_JAR:-}" ] && [ "$SUBMIT" != endpoint ]; then
    RUNNER_ARGS+=("--flink_job_server_jar=$FLINK_JOB_SERVER_JAR")
fi
if [ -n "${PARALLELISM:-}" ]; then
    RUNNER_ARGS+=("--parallelism=$PARALLELISM")
fi

check_versions
build_image
run "$PYTHON" "${RUN_ARGS[@]}" "${RUNNER_ARGS[@]}" "${ENV_ARGS[@]}" "${EXTRA[@]}"
