# c2scribe runtime image: Debian's libnids/libhtp + the c2scribe engine and CLI.
# (The Beam SDK worker image for Flink/Spark/Dataflow comes with the pipeline, issue 4.)
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libnids-dev libhtp-dev libpcap-dev libssl-dev libbrotli-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/c2scribe
COPY pyproject.toml setup.py README.md ./
COPY c2scribe ./c2scribe
COPY pipeline ./pipeline
COPY transforms ./transforms
RUN pip install --no-cache-dir .

ENTRYPOINT ["c2scribe"]
CMD ["--help"]
