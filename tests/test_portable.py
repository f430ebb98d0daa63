"""`c2scribe run` on the portable path Flink and Spark use; the worker image and deploy/ files.

The portable path: PortableRunner submits the pipeline through the Job API to a job service,
which asks an EXTERNAL worker pool for SDK harness processes, and those run ProcessUnitFn. On
a cluster the job service is Flink's or Spark's job server and the worker pool is the
c2scribe image started with `--worker_pool`. Here they are Beam's Python local job service
and worker_pool_main, each a separate process on a free port. The pool starts its workers
either as its own SdkHarness processes, or through a `--container_executable` that does what
the image's boot does: fetch the pipeline options from the provision service, then start
sdk_worker_main. Either way the run must write exactly what the default local run writes,
in both output formats (jsonl, Parquet), and exit with the same status.

The deploy/ scripts are checked through DRY_RUN=1: the commands they print are parsed the way
Beam parses them. The Dockerfile's versions are checked against pyproject.toml.
Building the image and running on real clusters cannot be tested here (deploy/README.md).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("apache_beam", reason="the pipeline extra is not installed "
                    "(pip install -e '.[pipeline]')")

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PY = sys.executable
RUNNERS = ("flink", "spark", "dataflow", "local")
START_TIMEOUT = 30          # seconds for a service to come up
RUN_TIMEOUT = 120           # seconds for one `c2scribe run`
DECODERS = ("--decoder", "http", "--decoder", "njrat")   # an HTTP and a stream decoder


def _env(**extra: str) -> dict:
    """This interpreter's bin directory first on PATH: worker_pool_main starts `python`."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(PY).parent), env.get("PATH", "")])
    env.update(extra)
    return env


# ------------------------------------------------------------------------- services

class Service:
    """A background process in its own process group (it and every worker it starts), with
    its output in a log file; stop() ends the whole group, politely then not."""

    def __init__(self, argv: list[str], log: Path, cwd: Path, env: dict):
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 3000) -> str:
        return self.text()[-n:]

    def wait_for(self, probe, timeout: float = START_TIMEOUT):
        """probe()'s first true value, or None if the process dies or time runs out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = probe()
            if got:
                return got
            if self.proc.poll() is not None:
                return probe() or None
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        pgid = self.proc.pid
        if self.proc.poll() is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
        try:                                    # workers the service started, and itself
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


#: What the image's boot does as a worker pool's container executable, minus the artifacts
#: (c2scribe stages none: it is installed in the image).
BOOT = '''#!@PYTHON@
import argparse, os, sys, tempfile
import grpc
from google.protobuf import json_format
from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc

ap = argparse.ArgumentParser()
for name in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint",
             "control_endpoint"):
    ap.add_argument("--" + name, required=True)
a, _ = ap.parse_known_args()
with grpc.insecure_channel(a.provision_endpoint) as channel:
    info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", a.id)],
        timeout=60).info
env = dict(os.environ, WORKER_ID=a.id,
           PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
           CONTROL_API_SERVICE_DESCRIPTOR='url: "%s"' % (info.control_endpoint.url
                                                         or a.control_endpoint),
           LOGGING_API_SERVICE_DESCRIPTOR='url: "%s"' % (info.logging_endpoint.url
                                                         or a.logging_endpoint),
           SEMI_PERSISTENT_DIRECTORY=tempfile.mkdtemp(prefix="boot-"),
           RUNNER_CAPABILITIES=" ".join(info.runner_capabilities))
os.execve(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"],
          env)
'''


@dataclass
class Pool:
    kind: str
    port: int
    service: Service
    boot: Path | None


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("portable")
    (w / "tmp").mkdir()
    return w


@pytest.fixture(scope="module")
def job_service(work):
    """Beam's local job service (the Job API of a cluster's job server) on a free port."""
    port_file = work / "job.port"
    svc = Service([PY, "-m", "apache_beam.runners.portability.local_job_service_main",
                   "--port", "0", "--port_file", str(port_file)],
                  work / "job-service.log", work, _env(TMPDIR=str(work / "tmp")))
    try:
        port = svc.wait_for(lambda: port_file.exists() and port_file.read_text().strip())
        if not port:
            pytest.skip("Beam's local job service (apache_beam.runners.portability."
                        f"local_job_service_main) did not start: {svc.tail()}")
        yield int(port)
    finally:
        svc.stop()


@pytest.fixture(scope="module", params=["sdk_harness", "boot"])
def worker_pool(request, work):
    """An EXTERNAL worker pool on a free port: workers as the pool's own SdkHarness processes,
    or through a container executable that behaves like the image's boot."""
    argv = [PY, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", "0"]
    boot = None
    if request.param == "boot":
        boot = work / "boot"
        boot.write_text(BOOT.replace("@PYTHON@", PY))
        boot.chmod(0o755)
        argv += ["--container_executable", str(boot)]
    svc = Service(argv, work / f"worker-pool-{request.param}.log", work,
                  _env(TMPDIR=str(work / "tmp")))
    try:
        m = svc.wait_for(lambda: re.search(r"Started worker pool servicer at port: \S*:(\d+)",
                                           svc.text()))
        if not m:
            pytest.skip("Beam's worker pool (apache_beam.runners.worker.worker_pool_main) "
                        f"did not start: {svc.tail()}")
        yield Pool(request.param, int(m.group(1)), svc, boot)
    finally:
        svc.stop()


# ------------------------------------------------------------------------- the runs

@pytest.fixture(scope="module")
def captures(work) -> Path:
    """The bundled samples, one sensor directory per conversation (the rotation's two files
    in one), and a sensor with a damaged file: five units."""
    from c2scribe.samples import write_samples
    root = work / "captures"
    paths = [Path(p) for p in write_samples(str(work / "samples"))]
    for p in paths:
        sensor = root / p.name.split(".")[0]
        sensor.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, sensor / p.name)
    plain = next(p for p in paths if p.suffix == ".pcap")
    data = plain.read_bytes()
    (root / "damaged").mkdir()
    (root / "damaged" / "cut.pcap").write_bytes(data[:len(data) // 2 + 3])
    return root


def c2scribe_run(captures: Path, output: Path, cwd: Path, fmt: str, *extra: str):
    argv = [PY, "-m", "c2scribe", "run", "--input", f"{captures}/**", "--output", str(output),
            "--format", fmt, *DECODERS, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=cwd,
                          env=_env(TMPDIR=str(cwd / "tmp")))


def outputs(root: Path) -> dict[str, list]:
    """Every file under OUTPUT, by relative path: the records of each dataset (jsonl lines, or
    Parquet rows) and _status (without the unit's `seconds`). Left-over temporary files count
    too."""
    import pyarrow.parquet as pq
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if p.suffix == ".parquet":
            out[rel] = pq.read_table(p).to_pylist()
            continue
        lines = p.read_text().splitlines()
        if rel.startswith("_status/"):
            docs = [json.loads(x) for x in lines]
            for d in docs:
                d.pop("seconds", None)
            lines = docs
        out[rel] = lines
    return out


@pytest.fixture(scope="module")
def local_runs(captures, work):
    """The default local run (FnApiRunner, worker processes) in a format: (result, outputs)."""
    done = {}

    def get(fmt: str):
        if fmt not in done:
            out = work / f"out-local-{fmt}"
            r = c2scribe_run(captures, out, work, fmt, "--workers", "2")
            assert r.returncode in (0, 1), r.stderr[-3000:]
            got = outputs(out)
            units = [d for k, v in got.items() if k.startswith("_status/") for d in v
                     if d["record"] == "unit"]
            # Not vacuous: five units, none failed, every dataset the samples produce.
            assert len(units) == 5, r.stderr[-3000:]
            assert not [u for u in units if u["failure"]], [u["failure"] for u in units]
            datasets = {k.split("/")[0] for k in got}
            assert {"connection", "http", "c2", "capture_error", "_status"} <= datasets
            assert all(p.endswith("." + fmt) for p in got if not p.startswith("_status/"))
            assert r.returncode == 1, "the damaged file makes the exit status 1"
            done[fmt] = r, got
        return done[fmt]
    return get


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_portable_run_equals_local_run(captures, work, local_runs, job_service, worker_pool,
                                       fmt):
    out = work / f"out-portable-{worker_pool.kind}-{fmt}"
    r = c2scribe_run(captures, out, work, fmt, "--runner=PortableRunner",
                     f"--job_endpoint=localhost:{job_service}",
                     "--environment_type=EXTERNAL",
                     f"--environment_config=localhost:{worker_pool.port}")
    local, want = local_runs(fmt)
    assert r.returncode == local.returncode, r.stderr[-3000:]
    assert "(PortableRunner)" in r.stderr
    got = outputs(out)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs between the portable and local runs"
    # The EXTERNAL pool did the work, the way this variant starts workers.
    log = worker_pool.service.text()
    assert "Starting worker with command" in log, log[-3000:]
    if worker_pool.boot is not None:
        assert str(worker_pool.boot) in log
        # sdk_worker_main got the pipeline options from the provision service, as in the image
        assert "Pipeline_options:" in log and "'environment_type': 'EXTERNAL'" in log, log[-3000:]
    else:
        assert "SdkHarness(" in log


# ------------------------------------------------------------------------- object stores

from apache_beam.io.localfilesystem import LocalFileSystem  # noqa: E402


class FakeObjectStore(LocalFileSystem):
    """c2fake:///abs/path is /abs/path, reached through Beam's FileSystems as gs:// or s3://
    paths are: what the pipeline does with object-store inputs, without an object store."""
    PREFIX = "c2fake://"

    @classmethod
    def scheme(cls):
        return "c2fake"

    def _local(self, path):
        return path[len(self.PREFIX):] if path.startswith(self.PREFIX) else path

    def match(self, patterns, limits=None):
        results = super().match([self._local(p) for p in patterns], limits)
        for res in results:
            for md in res.metadata_list:
                md.path = self.PREFIX + md.path
        return results

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def exists(self, path):
        return super().exists(self._local(path))

    def size(self, path):
        return super().size(self._local(path))


def test_object_store_input(captures, tmp_path):
    from pipeline.run import ProcessUnitFn
    from pipeline.units import plan
    units = plan([f"{FakeObjectStore.PREFIX}{captures}/web-keepalive/*"], None)
    assert len(units) == 1 and units[0].files[0].startswith(FakeObjectStore.PREFIX)
    assert units[0].first_ts_us[0] is not None, "the planner cannot read the first packet"
    statuses = list(ProcessUnitFn(str(tmp_path), []).process(units[0]))
    files = [s for s in statuses if s["record"] == "file"]
    assert [s["status"] for s in files] == ["ok"], files
    assert statuses[-1]["records"].get("c2scribe.connection", 0) > 0


# ------------------------------------------------------------------------- deploy/ scripts

def dry_run(runner: str, **env: str):
    """(result, [argv of each command printed]) of deploy/RUNNER/submit.sh with DRY_RUN=1."""
    r = _dry_run(runner, tuple(sorted(env.items())))
    cmds = [shlex.split(line[2:]) for line in r.stdout.splitlines() if line.startswith("+ ")]
    return r, cmds


@functools.lru_cache(maxsize=None)
def _dry_run(runner: str, env: tuple):
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
         "DRY_RUN": "1", "PYTHON": PY, **dict(env)}
    return subprocess.run(["bash", str(DEPLOY / runner / "submit.sh")], env=e,
                          capture_output=True, text=True, timeout=60)


def run_args(cmds: list[list[str]]) -> list[str]:
    """The arguments after `-m c2scribe run` of the one c2scribe command printed."""
    found = [c for c in cmds if c[1:4] == ["-m", "c2scribe", "run"]]
    assert len(found) == 1, cmds
    assert found[0][0] == PY
    return found[0][4:]


def beam_views(args: list[str]):
    from apache_beam.options import pipeline_options as po
    from pipeline.options import C2ScribeOptions
    o = po.PipelineOptions(args)
    return o, o.view_as(C2ScribeOptions), o.view_as(po.StandardOptions), o.view_as(po.PortableOptions)


S3 = {"INPUT": "s3://caps/sensor-*/** s3://caps/extra/*.pcap", "OUTPUT": "s3://out/run-1",
      "IMAGE": "reg/c2scribe-worker:abc123", "DECODERS": "http njrat"}
GS = {"INPUT": "gs://caps/**/*.pcap.gz", "OUTPUT": "gs://out/run-1",
      "IMAGE": "reg/proj/c2scribe-worker:abc123"}

#: (runner, environment, what the printed c2scribe command must say)
CASES = [
    ("flink", dict(S3, FLINK_MASTER="flink-jm:8081", SDK_WORKER_PARALLELISM="8"),
     dict(runner="FlinkRunner", flink_master="flink-jm:8081", flink_submit_uber_jar=True,
          environment_type="DOCKER", environment_config=S3["IMAGE"], sdk_worker_parallelism="8")),
    ("flink", dict(S3, FLINK_MASTER="flink-jm:8081", SUBMIT="job_server", FLINK_VERSION="1.19",
                   ENVIRONMENT="external", INPUT="/archive/**", OUTPUT="/shared/out",
                   PARALLELISM="16", FLINK_JOB_SERVER_JAR="/opt/jars/flink-js.jar"),
     dict(runner="FlinkRunner", flink_version="1.19", flink_submit_uber_jar=False,
          environment_type="EXTERNAL", environment_config="localhost:50000", parallelism=16,
          flink_job_server_jar="/opt/jars/flink-js.jar", sdk_worker_parallelism="1")),
    ("flink", dict(S3, SUBMIT="endpoint", JOB_ENDPOINT="beam-js:8099", ENVIRONMENT="external",
                   WORKER_POOL="10.0.0.5:50000"),
     dict(runner="PortableRunner", job_endpoint="beam-js:8099", environment_type="EXTERNAL",
          environment_config="10.0.0.5:50000")),
    ("spark", dict(S3, SPARK_MASTER_URL="spark://spark-master:7077", SDK_WORKER_PARALLELISM="4"),
     dict(runner="SparkRunner", spark_master_url="spark://spark-master:7077",
          spark_submit_uber_jar=False, environment_type="DOCKER",
          environment_config=S3["IMAGE"], sdk_worker_parallelism="4")),
    ("spark", dict(S3, SUBMIT="uber_jar", SPARK_MASTER_URL="spark://spark-master:7077",
                   SPARK_REST_URL="http://spark-master:6066",
                   SPARK_JOB_SERVER_JAR="/opt/jars/spark-js.jar"),
     dict(runner="SparkRunner", spark_submit_uber_jar=True,
          spark_rest_url="http://spark-master:6066",
          spark_job_server_jar="/opt/jars/spark-js.jar")),
    ("spark", dict(S3, SUBMIT="endpoint", JOB_ENDPOINT="beam-js:8099"),
     dict(runner="PortableRunner", job_endpoint="beam-js:8099")),
    ("dataflow", dict(GS, PROJECT="proj", REGION="europe-west1", TEMP_LOCATION="gs://tmpb/tmp",
                      JOB_NAME="c2scribe-test", MACHINE_TYPE="n2-standard-2",
                      MAX_NUM_WORKERS="50"),
     dict(runner="DataflowRunner", project="proj", region="europe-west1",
          temp_location="gs://tmpb/tmp", job_name="c2scribe-test",
          sdk_container_image=GS["IMAGE"], sdk_location="container",
          number_of_worker_harness_threads=1, machine_type="n2-standard-2",
          max_num_workers=50)),
    ("local", dict(INPUT="/archive/**/*.pcap.gz", OUTPUT="/srv/out", WORKERS="3"),
     dict(runner=None, workers=3)),
    ("local", dict(INPUT="/archive/**", OUTPUT="/srv/out", MODE="portable", IMAGE="c2w:dev",
                   DATA_DIR="/archive", JOB_PORT="8123"),
     dict(runner="PortableRunner", job_endpoint="localhost:8123", environment_type="EXTERNAL",
          environment_config="localhost:50000")),
]


@pytest.mark.parametrize("path", ["common.sh", *(f"{r}/submit.sh" for r in RUNNERS)])
def test_scripts_parse(path):
    script = DEPLOY / path
    assert script.is_file(), script
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    if path != "common.sh":
        assert os.access(script, os.X_OK), f"{path} is not executable"
        assert "set -euo pipefail" in script.read_text()
        assert (script.parent / "README.md").is_file()


@pytest.mark.parametrize("runner,env,want", CASES,
                         ids=[f"{c[0]}-{c[1].get('SUBMIT', c[1].get('MODE', 'default'))}"
                              for c in CASES])
def test_dry_run_command(runner, env, want):
    from apache_beam.options import pipeline_options as po
    r, cmds = dry_run(runner, **env)
    assert r.returncode == 0, r.stderr
    args = run_args(cmds)
    o, c2, std, portable = beam_views(args)
    assert c2.input == env["INPUT"].split() and c2.output == env["OUTPUT"]
    assert c2.decoder == (env["DECODERS"].split() if "DECODERS" in env else None)
    views = [std, portable, c2, o.view_as(po.FlinkRunnerOptions),
             o.view_as(po.SparkRunnerOptions), o.view_as(po.JobServerOptions),
             o.view_as(po.GoogleCloudOptions), o.view_as(po.WorkerOptions),
             o.view_as(po.SetupOptions), o.view_as(po.DebugOptions)]
    for key, value in want.items():
        holder = next((v for v in views if hasattr(v, key)), None)
        assert holder is not None, key
        assert getattr(holder, key) == value, (key, getattr(holder, key), args)
    if runner in ("flink", "spark"):
        # one bundle per SDK harness process at a time (libnids: one engine per process)
        assert "--load_balance_bundles" in args
    if runner == "dataflow":
        assert "use_runner_v2" in o.view_as(po.DebugOptions).experiments
        assert o.view_as(po.DebugOptions).number_of_worker_harness_threads == 1


def test_dry_run_local_modes():
    env = dict(INPUT="/archive/**", OUTPUT="/srv/out", IMAGE="c2w:dev", DATA_DIR="/archive")
    r, cmds = dry_run("local", MODE="docker", BUILD_IMAGE="1", PUSH_IMAGE="0", **env)
    assert r.returncode == 0, r.stderr
    assert ["docker", "build", "-t", "c2w:dev", str(REPO)] in cmds
    assert not [c for c in cmds if c[:2] == ["docker", "push"]]
    docker = next(c for c in cmds if c[:2] == ["docker", "run"])
    i = docker.index("--entrypoint")
    assert docker[i + 1:i + 4] == ["c2scribe", "c2w:dev", "run"]
    assert "/archive:/archive:ro" in docker and "/srv/out:/srv/out" in docker
    assert docker[i + 4:] == ["--input", "/archive/**", "--output", "/srv/out"]

    r, cmds = dry_run("local", MODE="portable", **env)
    assert r.returncode == 0, r.stderr
    pool = next(c for c in cmds if c[:2] == ["docker", "run"])
    assert pool[-2:] == ["c2w:dev", "--worker_pool"] and "--network=host" in pool
    assert [PY, "-m", "apache_beam.runners.portability.local_job_service_main",
            "--port", "8099"] in cmds
    assert cmds[-1][:2] == ["docker", "stop"]


def test_dry_run_builds_and_pushes():
    r, cmds = dry_run("dataflow", **GS, PROJECT="p", REGION="r", TEMP_LOCATION="gs://t/tmp",
                      BUILD_IMAGE="1")
    assert r.returncode == 0, r.stderr
    assert cmds[0] == ["docker", "build", "-t", GS["IMAGE"], str(REPO)]
    assert cmds[1] == ["docker", "push", GS["IMAGE"]]
    assert re.fullmatch(r"--job_name=c2scribe-\d{8}-\d{6}",
                        next(a for a in run_args(cmds) if a.startswith("--job_name=")))


@pytest.mark.parametrize("runner,env,missing", [
    ("flink", {}, "INPUT"),
    ("flink", dict(S3), "FLINK_MASTER"),
    ("flink", dict(S3, SUBMIT="job_server", FLINK_MASTER="jm:8081"), "FLINK_VERSION"),
    ("flink", dict(S3, SUBMIT="endpoint"), "JOB_ENDPOINT"),
    ("flink", dict(S3, IMAGE=""), "IMAGE"),
    ("spark", dict(S3), "SPARK_MASTER_URL"),
    ("spark", dict(S3, SUBMIT="uber_jar", SPARK_MASTER_URL="spark://m:7077"), "SPARK_REST_URL"),
    ("dataflow", dict(GS), "PROJECT"),
    ("dataflow", dict(GS, PROJECT="p", REGION="r"), "TEMP_LOCATION"),
    ("local", {}, "INPUT"),
    ("local", dict(INPUT="/a/**", OUTPUT="/o", MODE="docker", IMAGE="x"), "DATA_DIR"),
])
def test_missing_parameter_is_named(runner, env, missing):
    r, cmds = dry_run(runner, **env)
    assert r.returncode == 2 and not cmds, (r.stdout, r.stderr)
    assert f"{missing} is not set" in r.stderr, r.stderr


@pytest.mark.parametrize("runner,env,message", [
    ("flink", dict(S3, FLINK_MASTER="jm", INPUT="/archive/**"), "local path"),
    ("spark", dict(S3, SPARK_MASTER_URL="spark://m:7077", OUTPUT="/srv/out"), "local path"),
    ("dataflow", dict(GS, PROJECT="p", REGION="r", TEMP_LOCATION="gs://t", OUTPUT="/srv/out"),
     "local path"),
    ("dataflow", dict(GS, PROJECT="p", REGION="r", TEMP_LOCATION="/tmp"), "gs://"),
    ("flink", dict(S3, FLINK_MASTER="jm", ENVIRONMENT="kubernetes"), "must be one of"),
    ("flink", dict(S3, FLINK_MASTER="jm", SDK_WORKER_PARALLELISM="all"), "a number"),
    ("local", dict(INPUT="/a", OUTPUT="/o", MODE="cluster"), "must be one of"),
])
def test_bad_parameter_is_refused(runner, env, message):
    r, cmds = dry_run(runner, **env)
    assert r.returncode == 2 and not cmds, (r.stdout, r.stderr)
    assert message in r.stderr, r.stderr


def test_version_mismatch_is_refused(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '3.12 2.76.0'\n")
    fake.chmod(0o755)
    r, cmds = dry_run("local", INPUT="/a/**", OUTPUT="/o", PYTHON=str(fake))
    assert r.returncode == 2 and not cmds
    assert "must equal the worker image" in r.stderr and "3.12 2.76.0" in r.stderr, r.stderr


@pytest.mark.parametrize("runner", RUNNERS)
def test_runbook_shows_every_option(runner):
    """Each runbook documents every option its script can pass."""
    flags = set()
    for name, env, _ in CASES:
        if name == runner:
            _, cmds = dry_run(runner, **env)
            for cmd in cmds:
                flags |= {a.split("=", 1)[0] for a in cmd if a.startswith("--")}
    assert flags
    text = (DEPLOY / runner / "README.md").read_text()
    missing = sorted(f for f in flags if f not in text)
    assert not missing, f"deploy/{runner}/README.md does not mention {missing}"


# ------------------------------------------------------------------------- Dockerfile

def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_dockerfile_versions_match_the_project():
    text = _dockerfile()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)\s*$", text, re.M))
    pyproject = (REPO / "pyproject.toml").read_text()
    pin = re.search(r'"apache-beam==([^"\]]+)"', pyproject)
    assert pin, "pyproject.toml pins no apache-beam version"
    assert args.get("BEAM_VERSION") == pin.group(1), (args, pin.group(1))
    here = "%d.%d" % sys.version_info[:2]
    assert args.get("PYTHON_VERSION") == here, (
        f"Dockerfile PYTHON_VERSION={args.get('PYTHON_VERSION')}, project Python {here}: "
        "the submitting interpreter and the workers must run the same Python")
    low = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"', pyproject)
    assert low and tuple(map(int, args["PYTHON_VERSION"].split("."))) >= tuple(
        map(int, low.groups()))
    import apache_beam
    assert apache_beam.__version__ == pin.group(1), "the dev environment's Beam is not the pin"
    # Every stage is the official SDK image of those versions; its entry point is kept.
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and set(froms) == {"apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}"}
    entry = re.findall(r"^ENTRYPOINT\s+(.+)$", text, re.M)
    assert entry and json.loads(entry[-1]) == ["/opt/apache/beam/boot"]
    assert "[gcp,aws]" in text and "[pipeline]" in text


def test_dockerignore_lets_the_sources_in():
    text = _dockerfile()
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore and "**/*.so" in ignore   # never the host's in-place build
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert src in allowed, f"COPY {src}: excluded by .dockerignore"
            assert (REPO / src).exists(), src
