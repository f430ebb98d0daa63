#!/usr/bin/env bash
# Submit `c2scribe run` to a Spark 3 standalone cluster: SparkRunner (portable), SDK harness =
# the c2scribe worker image. Runbook: deploy/spark/README.md. Parameters come from the
# environment:
#
#   INPUT             capture patterns, space-separated (s3://bucket/pcaps/**)        required
#   OUTPUT            output directory (s3://bucket/c2scribe/run-1)                    required
#   SPARK_MASTER_URL  spark://host:7077 (SUBMIT=job_server|uber_jar)                  required
#   IMAGE             worker image REGISTRY/c2scribe-worker:TAG (ENVIRONMENT=docker, BUILD_IMAGE=1)
#   SUBMIT            job_server (default: Beam's Spark job server started here (Java);
#                                 it is the Spark driver, so executors must reach this host)
#                     | uber_jar (jar posted to the master's REST server, SPARK_REST_URL)
#                     | endpoint (a running Beam Spark job server container at JOB_ENDPOINT)
#   SPARK_REST_URL    http://host:6066 (SUBMIT=uber_jar; spark.master.rest.enabled=true)
#   JOB_ENDPOINT      host:8099 of the job server (SUBMIT=endpoint)
#   SPARK_JOB_SERVER_JAR  a local copy of the Beam Spark 3 job server jar (no download)
#   ENVIRONMENT       docker (default: executors' hosts start IMAGE with docker)
#                     | external (a worker pool of IMAGE next to each executor)
#   WORKER_POOL       the worker pool as seen from an executor (default localhost:50000)
#   SDK_WORKER_PARALLELISM  SDK harness processes per executor: spark.executor.cores (default 1)
#   DECODERS, SENSOR_PATTERN, EXTRA_ARGS, PYTHON, BUILD_IMAGE, PUSH_IMAGE, DRY_RUN: see
#   deploy/README.md
set -euo pipefail
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

SUBMIT=${SUBMIT:-job_server}
one_of SUBMIT job_server uber_jar endpoint
c2scribe_args
portable_env_args

case $SUBMIT in
    job_server)
        need SPARK_MASTER_URL "the Spark master, e.g. spark://spark-master:7077"
        RUNNER_ARGS=(--runner=SparkRunner "--spark_master_url=$SPARK_MASTER_URL")
        ;;
    uber_jar)
        need SPARK_MASTER_URL "the Spark master, e.g. spark://spark-master:7077"
        need SPARK_REST_URL "the master's REST submission server, e.g. http://spark-master:6066"
        RUNNER_ARGS=(--runner=SparkRunner "--spark_master_url=$SPARK_MASTER_URL"
                     --spark_submit_uber_jar "--spark_rest_url=$SPARK_REST_URL")
        ;;
    endpoint)
        need JOB_ENDPOINT "the Beam Spark job server, host:8099"
        RUNNER_ARGS=(--runner=PortableRunner "--job_endpoint=$JOB_ENDPOINT")
        ;;
esac
if [ -n "${SPARK_JOB_SERVER_JAR:-}" ] && [ "$SUBMIT" != endpoint ]; then
    RUNNER_ARGS+=("--spark_job_server_jar=$SPARK_JOB_SERVER_JAR")
fi

check_versions
build_image
run "$PYTHON" "${RUN_ARGS[@]}" "${RUNNER_ARGS[@]}" "${ENV_ARGS[@]}" "${EXTRA[@]}"
