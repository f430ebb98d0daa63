# c2scribe worker image: the Apache Beam Python SDK container + Debian's libnids/libhtp +
# c2scribe with its pipeline extra, built from this source tree.
#
# It is the SDK harness container of FlinkRunner, SparkRunner and DataflowRunner (the SDK
# image's ENTRYPOINT, /opt/apache/beam/boot, is kept), and it runs the CLI too:
#
#   docker build -t IMAGE .
#   docker run --rm --entrypoint c2scribe IMAGE demo                 # the CLI
#   docker run -d --network=host IMAGE --worker_pool                # SDK worker pool, port 50000
#   (FlinkRunner/SparkRunner: --environment_type=DOCKER --environment_config=IMAGE, or
#    --environment_type=EXTERNAL --environment_config=localhost:50000 with the worker pool;
#    DataflowRunner: --sdk_container_image=IMAGE.  See deploy/README.md.)
#
# The workers' Python (major.minor) and Beam versions must equal those of the machine that
# submits the pipeline. BEAM_VERSION is the apache-beam pin of pyproject.toml's pipeline extra
# and PYTHON_VERSION the project's Python: tests/test_portable.py keeps them in step, and the
# deploy/ scripts refuse to submit from an interpreter that differs.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0

# ------------------------------------------------------------------------------ builder
# Same base as the final image: same Debian release, same Python, so the wheel built here
# links against exactly the library versions the final stage installs.
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config \
      libnids-dev libhtp-dev libpcap-dev libssl-dev libbrotli-dev \
 && rm -rf /var/lib/apt/lists/* \
 && dpkg-query -W libnids-dev libhtp-dev libpcap-dev libssl-dev libbrotli-dev

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY c2scribe ./c2scribe
COPY pipeline ./pipeline
COPY transforms ./transforms

# The wheel (C engine compiled by setup.py), then the Debian packages that provide the shared
# libraries it links against (libnids, libhtp, libpcap, libcrypto, libbrotli and theirs),
# found with ldd + dpkg -S, so that the final stage installs runtime packages only, under
# whatever names this Debian release gives them (libssl3 or libssl3t64, ...).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('/wheels/c2scribe-*.whl')[0]); \
[z.extract(n, '/tmp/whl') for n in z.namelist() if n.endswith('.so')]" \
 && so=$(ls /tmp/whl/c2scribe/_core*.so) \
 && ldd "$so" \
 && for lib in $(ldd "$so" | awk '$3 ~ /^\// {print $3}'); do \
      { dpkg -S "*/$(basename "$(readlink -f "$lib")")" 2>/dev/null || true; } | awk -F: 'NR == 1 {print $1}'; \
    done | sort -u > /wheels/runtime-packages.txt \
 && echo "runtime packages:" $(cat /wheels/runtime-packages.txt) \
 && for want in libnids libhtp libpcap libssl libbrotli; do \
      grep -q "^$want" /wheels/runtime-packages.txt || { echo "no $want package found" >&2; exit 1; }; \
    done \
 && rm -rf /tmp/whl

# ------------------------------------------------------------------------------ worker image
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
ARG PYTHON_VERSION
ARG BEAM_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="c2scribe worker" \
      org.opencontainers.image.description="Apache Beam ${BEAM_VERSION} Python ${PYTHON_VERSION} SDK harness with c2scribe (libnids/libhtp)"

COPY --from=builder /wheels /tmp/wheels

# Runtime libraries only: no compiler, no headers.
RUN apt-get update \
 && xargs -a /tmp/wheels/runtime-packages.txt \
      env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*

# c2scribe[pipeline] (apache-beam pinned to BEAM_VERSION: the SDK already installed is kept)
# and Beam's gcp and aws extras, for gs:// and s3:// inputs and outputs (Beam FileSystems).
# Then check what the workers need: the versions, the engine, the pipeline modules, the
# object-store filesystems, and a real run of the engine on the bundled samples.
RUN pip install --no-cache-dir \
      "apache-beam[gcp,aws]==${BEAM_VERSION}" \
      "$(ls /tmp/wheels/c2scribe-*.whl)[pipeline]" \
 && rm -rf /tmp/wheels \
 && pip check \
 && python -c "import sys, apache_beam; \
v = '%d.%d' % sys.version_info[:2]; \
assert v == '${PYTHON_VERSION}', 'Python %s, expected ${PYTHON_VERSION}' % v; \
assert apache_beam.__version__ == '${BEAM_VERSION}', 'Beam %s, expected ${BEAM_VERSION}' % apache_beam.__version__; \
import c2scribe._core, pipeline.run, pipeline.units, transforms.parquet; \
assert hasattr(pipeline.run, 'ProcessUnitFn'), 'pipeline is not c2scribe pipeline package'; \
import apache_beam.io.gcp.gcsfilesystem, apache_beam.io.aws.s3filesystem, boto3, google.cloud.storage" \
 && c2scribe demo --dir /tmp/c2scribe-demo > /dev/null \
 && rm -rf /tmp/c2scribe-demo

# The SDK harness entry point (boot): DOCKER environments start it with --id and the runner's
# endpoints; `--worker_pool` makes it the EXTERNAL worker pool. `--entrypoint c2scribe` runs
# the CLI instead.
ENTRYPOINT ["/opt/apache/beam/boot"]
