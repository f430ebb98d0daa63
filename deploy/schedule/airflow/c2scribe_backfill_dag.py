"""Airflow DAG: `c2scribe backfill` every hour, the same command as the cron and systemd
recipes (see deploy/schedule/README.md).

Copy this file into the DAGs folder. It needs Airflow 2.4 or later (``schedule=``), and
c2scribe with its pipeline extra installed where the task runs, as the ``c2scribe`` command
on PATH (or set the Airflow Variable ``c2scribe_bin``). To run in the worker image on
Kubernetes instead, see ``KubernetesPodOperator`` at the end of this file.

Airflow Variables (Admin -> Variables):

- ``c2scribe_input``: capture patterns, space-separated (``/archive/**/*.pcap*``);
- ``c2scribe_output``: the output directory (or ``gs://``/``s3://`` URL);
- ``c2scribe_backfill_args``: more options, space-separated (``--decoder njrat``), optional;
- ``c2scribe_es_url`` and ``c2scribe_es_api_key``: index into Elasticsearch, optional.
  Airflow masks the values of Variables whose name contains ``api_key`` in its logs; the key
  reaches c2scribe through the environment, never on the command line.

No overlap: ``max_active_runs=1`` (one DAG run at a time) and ``catchup=False`` (a paused DAG
does not queue a run per missed hour: one backfill does whatever is not done). backfill is
idempotent and resumable, so a retry, or a run killed by a time-out, finishes the work
without doubling any record. Exit status 1 (a damaged capture, a failed unit) fails the task,
so it shows in Airflow's alerts; the run itself is complete.
"""
from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

# `set -f`: the patterns reach c2scribe unexpanded (it expands them itself, ** included).
BACKFILL = """
set -euf
exec "${C2SCRIBE_BIN:-c2scribe}" backfill --progress never \
    --input $C2SCRIBE_INPUT --output "$C2SCRIBE_OUTPUT" $C2SCRIBE_BACKFILL_ARGS
"""

with DAG(
    dag_id="c2scribe_backfill",
    description="c2scribe backfill: transcripts of new or changed captures",
    schedule="17 * * * *",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    dagrun_timeout=dt.timedelta(hours=23),
    default_args={
        "owner": "c2scribe",
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=10),
        "execution_timeout": dt.timedelta(hours=22),
    },
    tags=["c2scribe"],
    doc_md=__doc__,
) as dag:
    backfill = BashOperator(
        task_id="backfill",
        bash_command=BACKFILL,
        # Jinja-rendered at run time: the Variables are read when the task runs, not when
        # the scheduler parses this file
        env={
            "C2SCRIBE_BIN": "{{ var.value.get('c2scribe_bin', 'c2scribe') }}",
            "C2SCRIBE_INPUT": "{{ var.value.c2scribe_input }}",
            "C2SCRIBE_OUTPUT": "{{ var.value.c2scribe_output }}",
            "C2SCRIBE_BACKFILL_ARGS": "{{ var.value.get('c2scribe_backfill_args', '') }}",
            "C2SCRIBE_ES_URL": "{{ var.value.get('c2scribe_es_url', '') }}",
            "C2SCRIBE_ES_API_KEY": "{{ var.value.get('c2scribe_es_api_key', '') }}",
        },
        append_env=True,                # keep PATH, HOME and the worker's own environment
    )

# In the worker image on Kubernetes instead (apache-airflow-providers-cncf-kubernetes), the
# same command; replace the BashOperator above with:
#
#   from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
#   from kubernetes.client import models as k8s
#
#   backfill = KubernetesPodOperator(
#       task_id="backfill",
#       name="c2scribe-backfill",
#       namespace="c2scribe",
#       image="REGISTRY/c2scribe-worker:TAG",
#       cmds=["c2scribe"],
#       arguments=["backfill", "--progress", "never", "--workers", "4",
#                  "--input", "/archive/**/*.pcap*", "--output", "/out",
#                  "--decoder", "njrat"],
#       env_vars={"C2SCRIBE_ES_URL": "https://elasticsearch.elastic.svc:9200"},
#       env_from=[k8s.V1EnvFromSource(
#           secret_ref=k8s.V1SecretEnvSource(name="c2scribe-backfill"))],
#       container_resources=k8s.V1ResourceRequirements(
#           requests={"cpu": "4", "memory": "8Gi"}, limits={"memory": "8Gi"}),
#       volumes=[...], volume_mounts=[...],    # as in ../kubernetes/cronjob.yaml
#       get_logs=True,
#       on_finish_action="delete_pod",
#   )
