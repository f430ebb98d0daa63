# Shared by the deploy/*/submit.sh scripts (sourced, not run): parameters from the
# environment, DRY_RUN, the versions check, the image build, the `c2scribe run` arguments.
# shellcheck shell=bash

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$DEPLOY_DIR")
PYTHON=${PYTHON:-python3}          # the interpreter that has c2scribe[pipeline] installed
SCRIPT="deploy/$(basename "$(dirname "$0")")/$(basename "$0")"

die() {
    printf '%s: %s\n' "$SCRIPT" "$*" >&2
    exit 2
}

# need VAR WHAT...: VAR must be set and not empty; the error says what to put in it.
need() {
    local name=$1
    shift
    if [ -z "${!name:-}" ]; then
        die "$name is not set: $*"
    fi
}

# one_of VAR VALUE...: VAR must hold one of the values.
one_of() {
    local name=$1 v
    shift
    for v in "$@"; do
        if [ "${!name}" = "$v" ]; then
            return 0
        fi
    done
    die "$name=${!name}: must be one of: $*"
}

# run CMD...: run the command; with DRY_RUN=1, print it instead (shell-quoted, after "+ ").
run() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# dockerfile_arg NAME: the default of `ARG NAME=...` in the Dockerfile.
dockerfile_arg() {
    sed -n "s/^ARG $1=//p" "$REPO_DIR/Dockerfile" | head -n 1
}

# The submitting interpreter must match the worker image: same Python major.minor (pickled
# code) and same Beam version (the pipeline proto and the SDK harness).
check_versions() {
    local want got
    want="$(dockerfile_arg PYTHON_VERSION) $(dockerfile_arg BEAM_VERSION)"
    got=$("$PYTHON" -c 'import sys; from importlib.metadata import version
print("%d.%d %s" % (sys.version_info[0], sys.version_info[1], version("apache-beam")))' \
        2>/dev/null) ||
        die "$PYTHON cannot import apache_beam: set PYTHON to the interpreter of a virtualenv" \
            "with c2scribe[pipeline] installed"
    if [ "$got" != "$want" ]; then
        die "the submitting Python/Beam ($PYTHON: $got) must equal the worker image's" \
            "($want, see Dockerfile)"
    fi
}

# BUILD_IMAGE=1: build IMAGE from this source tree and push it (PUSH_IMAGE=0: build only).
build_image() {
    if [ "${BUILD_IMAGE:-0}" != 1 ]; then
        return 0
    fi
    need IMAGE "the image to build, e.g. REGISTRY/c2scribe-worker:TAG"
    run docker build -t "$IMAGE" "$REPO_DIR"
    if [ "${PUSH_IMAGE:-1}" = 1 ]; then
        run docker push "$IMAGE"
    fi
}

# is_url PATH: gs://..., s3://..., hdfs://... (a Beam FileSystems path, not a local one).
is_url() {
    case $1 in
        *://*) return 0 ;;
        *) return 1 ;;
    esac
}

# urls_only WHY: INPUT's patterns and OUTPUT must all be object-store URLs (c2scribe_args
# first).
urls_only() {
    local p
    for p in "${INPUTS[@]}" "$OUTPUT"; do
        if ! is_url "$p"; then
            die "$p is a local path, but $*"
        fi
    done
}

# c2scribe_args: "-m c2scribe run --input ... --output ... [--decoder ...]" into RUN_ARGS,
# from INPUT (patterns, space-separated, into INPUTS), OUTPUT, DECODERS (space-separated),
# SENSOR_PATTERN; and EXTRA (from EXTRA_ARGS, space-separated: more options of c2scribe run
# or Beam, given last). Patterns are passed as they are: c2scribe expands them.
c2scribe_args() {
    local decoders=() d
    need INPUT "capture files: paths or glob patterns, space-separated"
    need OUTPUT "the output directory"
    read -r -a INPUTS <<< "$INPUT"
    read -r -a decoders <<< "${DECODERS:-}"
    read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
    RUN_ARGS=(-m c2scribe run --input "${INPUTS[@]}" --output "$OUTPUT")
    for d in "${decoders[@]}"; do
        RUN_ARGS+=(--decoder "$d")
    done
    if [ -n "${SENSOR_PATTERN:-}" ]; then
        RUN_ARGS+=(--sensor-pattern "$SENSOR_PATTERN")
    fi
}

# portable_env_args: the SDK harness environment of FlinkRunner/SparkRunner/PortableRunner
# into ENV_ARGS, from ENVIRONMENT (docker: the runner starts IMAGE itself; external: a worker
# pool of IMAGE runs next to each task manager / executor at WORKER_POOL) and
# SDK_WORKER_PARALLELISM (SDK harness processes per task manager / executor: its task slots).
# --load_balance_bundles gives each bundle one harness to itself: one unit per process.
portable_env_args() {
    ENVIRONMENT=${ENVIRONMENT:-docker}
    one_of ENVIRONMENT docker external
    SDK_WORKER_PARALLELISM=${SDK_WORKER_PARALLELISM:-1}
    case $SDK_WORKER_PARALLELISM in
        '' | *[!0-9]*) die "SDK_WORKER_PARALLELISM=$SDK_WORKER_PARALLELISM: a number" ;;
    esac
    if [ "$ENVIRONMENT" = docker ]; then
        need IMAGE "the worker image the runner starts, e.g. REGISTRY/c2scribe-worker:TAG"
        urls_only "ENVIRONMENT=docker: the SDK containers the runner starts see no local" \
            "directory. Use gs:// or s3:// paths, or ENVIRONMENT=external (worker pools with" \
            "the directories mounted at the same paths everywhere)"
        ENV_ARGS=(--environment_type=DOCKER "--environment_config=$IMAGE")
    else
        ENV_ARGS=(--environment_type=EXTERNAL "--environment_config=${WORKER_POOL:-localhost:50000}")
    fi
    ENV_ARGS+=("--sdk_worker_parallelism=$SDK_WORKER_PARALLELISM" --load_balance_bundles)
}
