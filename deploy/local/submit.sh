#!/usr/bin/env bash
# `c2scribe run` on one machine. Runbook: deploy/local/README.md. Parameters come from the
# environment:
#
#   INPUT    capture patterns, space-separated (/archive/**/*.pcap.gz)                 required
#   OUTPUT   output directory                                                           required
#   MODE     direct (default: this machine's c2scribe, FnApiRunner, one process per core)
#            | docker (the same, inside the worker image: `--entrypoint c2scribe`)
#            | portable (the cluster path on this machine: the image as an EXTERNAL worker
#              pool, Beam's local job service, PortableRunner; a smoke test of the image)
#   WORKERS  worker processes (default: all cores)
#   IMAGE    the worker image (MODE=docker|portable)
#   DATA_DIR a directory holding every input, mounted read-only into the container at the
#            same path (MODE=docker|portable)
#   JOB_PORT local job service port (MODE=portable, default 8099)
#   DECODERS, SENSOR_PATTERN, EXTRA_ARGS, PYTHON, BUILD_IMAGE, PUSH_IMAGE, DRY_RUN: see
#   deploy/README.md
set -euo pipefail
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

MODE=${MODE:-direct}
one_of MODE direct docker portable
c2scribe_args
if [ -n "${WORKERS:-}" ]; then
    RUN_ARGS+=(--workers "$WORKERS")
fi

# docker/portable: inputs and output are bind-mounted at the same paths as on this machine,
# so that the paths in the records and in OUTPUT/_status are the host's.
mounts() {
    need IMAGE "the worker image, e.g. c2scribe-worker:dev (BUILD_IMAGE=1 builds it)"
    need DATA_DIR "a directory that holds every input (mounted read-only)"
    if is_url "$OUTPUT"; then
        OUT_DIR=
    else
        OUT_DIR=$(realpath -m "$OUTPUT")
        run mkdir -p "$OUT_DIR"
    fi
    DATA_DIR=$(realpath -m "$DATA_DIR")
    MOUNTS=(-v "$DATA_DIR:$DATA_DIR:ro")
    if [ -n "$OUT_DIR" ]; then
        MOUNTS+=(-v "$OUT_DIR:$OUT_DIR")
    fi
}

case $MODE in
    direct)
        check_versions
        run "$PYTHON" "${RUN_ARGS[@]}" "${EXTRA[@]}"
        ;;
    docker)
        build_image
        mounts
        # RUN_ARGS without the leading "-m c2scribe": the image's c2scribe script.
        run docker run --rm --user "$(id -u):$(id -g)" -e HOME=/tmp -w /tmp "${MOUNTS[@]}" \
            --entrypoint c2scribe "$IMAGE" "${RUN_ARGS[@]:2}" "${EXTRA[@]}"
        ;;
    portable)
        check_versions
        build_image
        mounts
        JOB_PORT=${JOB_PORT:-8099}
        POOL=c2scribe-worker-pool-$$
        JOB_DIR=$(mktemp -d)
        cleanup() {
            if [ "${DRY_RUN:-0}" = 1 ]; then
                run docker stop "$POOL"
            else
                docker stop "$POOL" > /dev/null 2>&1 || true
            fi
            if [ -n "${JOB_PID:-}" ]; then
                kill "$JOB_PID" 2> /dev/null || true
            fi
            rm -rf "$JOB_DIR"
        }
        trap cleanup EXIT
        # The SDK worker pool (port 50000): each worker it starts is one boot process, one
        # SDK harness, exactly as next to a Flink task manager or a Spark executor.
        run docker run -d --rm --name "$POOL" --network=host "${MOUNTS[@]}" "$IMAGE" --worker_pool
        if [ "${DRY_RUN:-0}" != 1 ]; then
            timeout 60 bash -c 'until (exec 3<> /dev/tcp/127.0.0.1/50000) 2> /dev/null; do
                                    sleep 1; done' ||
                die "the worker pool did not listen on port 50000: $(docker logs "$POOL" 2>&1)"
        fi
        # Beam's local job service: the FnApiRunner behind the Job API a cluster job server
        # offers.
        if [ "${DRY_RUN:-0}" = 1 ]; then
            run "$PYTHON" -m apache_beam.runners.portability.local_job_service_main \
                --port "$JOB_PORT"
        else
            "$PYTHON" -m apache_beam.runners.portability.local_job_service_main \
                --port "$JOB_PORT" --port_file "$JOB_DIR/port" > "$JOB_DIR/log" 2>&1 &
            JOB_PID=$!
            for _ in $(seq 60); do
                if [ -s "$JOB_DIR/port" ]; then
                    break
                fi
                kill -0 "$JOB_PID" 2> /dev/null || die "the job service failed: $(cat "$JOB_DIR/log")"
                sleep 1
            done
            [ -s "$JOB_DIR/port" ] || die "the job service did not start in 60 s"
        fi
        run "$PYTHON" "${RUN_ARGS[@]}" --runner=PortableRunner "--job_endpoint=localhost:$JOB_PORT" \
            --environment_type=EXTERNAL --environment_config=localhost:50000 "${EXTRA[@]}"
        ;;
esac
