"""The Airflow recipe: `kedro airflow create` with deploy/airflow/dag_template.j2 writes a DAG that compiles, runs
nightly with retries, takes the request path as a DAG param, and runs one `kedro run --nodes ...` process per node
with the pipeline's dependencies as edges. Airflow is not installed: the DAG file runs against stand-ins for the
three Airflow names it uses."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import types

from conftest import PROJECT, copy_project, kedro

TEMPLATE = PROJECT / "deploy" / "airflow" / "dag_template.j2"


class Recorder:
    """Stand-ins for Airflow's DAG, Param and BashOperator that record what the DAG file builds."""

    def __init__(self) -> None:
        self.dag: dict = {}
        self.tasks: dict[str, dict] = {}
        self.edges: set[tuple[str, str]] = set()
        recorder = self

        class DAG:
            def __init__(self, **kwargs):
                recorder.dag = kwargs

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class BashOperator:
            def __init__(self, task_id, **kwargs):
                self.task_id = task_id
                recorder.tasks[task_id] = kwargs

            def __rshift__(self, other):
                recorder.edges.add((self.task_id, other.task_id))
                return other

        def param(default, **kwargs):
            return {"default": default, **kwargs}

        self.modules = {
            "airflow": types.ModuleType("airflow"),
            "airflow.sdk": types.SimpleNamespace(DAG=DAG, Param=param),
            "airflow.providers": types.ModuleType("airflow.providers"),
            "airflow.providers.standard": types.ModuleType("airflow.providers.standard"),
            "airflow.providers.standard.operators": types.ModuleType("airflow.providers.standard.operators"),
            "airflow.providers.standard.operators.bash": types.SimpleNamespace(BashOperator=BashOperator),
        }

    def run(self, source: str, filename: str) -> None:
        saved = {name: sys.modules.get(name) for name in self.modules}
        sys.modules.update(self.modules)
        try:
            exec(compile(source, filename, "exec"), {"__name__": "dag_file"})
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


def create_dag(tmp_path, *extra: str) -> tuple[str, Recorder]:
    project = copy_project(tmp_path)
    result = kedro(project, "airflow", "create", "--pipelines", "deletion_request", "--env", "test",
                   "--target-dir", "airflow_dags", "--jinja-file", str(TEMPLATE), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    dags = list((project / "airflow_dags").glob("*.py"))
    assert len(dags) == 1
    source = dags[0].read_text()
    ast.parse(source)
    recorder = Recorder()
    recorder.run(source, str(dags[0]))
    return source, recorder


def pipeline():
    """The deletion-request pipeline as `pipeline_registry` builds it: ingestion and the (cached) backbone rerun in
    each process that needs their in-memory outputs."""
    from kedro.pipeline import Pipeline

    from scrub_unlearning.pipelines import deletion_request, ingestion, originals

    return deletion_request.create_pipeline(
        ingestion.create_pipeline() + Pipeline(originals.create_pretraining_pipeline(), tags=["ingestion"]))


def slug(name: str) -> str:
    return name.replace("_", "-")


def nodes_of(task: dict) -> list[str]:
    words = task["bash_command"].split()
    return words[words.index("--nodes") + 1].split(",")


def test_the_dag_runs_nightly_with_retries_and_one_process_per_node(tmp_path):
    source, dag = create_dag(tmp_path)
    assert dag.dag["schedule"] == "0 2 * * *" and dag.dag["max_active_runs"] == 1 and not dag.dag["catchup"]
    assert dag.dag["default_args"]["retries"] == 2 and dag.dag["default_args"]["retry_delay"].total_seconds() == 600
    assert dag.dag["params"]["request_path"]["default"] == ""

    full = pipeline()
    ingestion = full.only_nodes_with_tags("ingestion")
    in_memory = ingestion.all_outputs()
    stages = [node for node in full.nodes if node not in ingestion.nodes]
    assert sorted(dag.tasks) == sorted(slug(node.name) for node in stages), "one task per node but ingestion's"
    for node in stages:
        task = dag.tasks[slug(node.name)]
        expected = ([n.name for n in ingestion.nodes] if set(node.inputs) & in_memory else []) + [node.name]
        assert nodes_of(task) == expected, node.name
        assert task["bash_command"].startswith("kedro run --env test --pipelines deletion_request --nodes ")
        assert task["env"]["REQUEST_PATH"] == "{{ params.request_path }}" and task["append_env"]
    # only the splits are in memory: the stages after unlearning need no ingestion
    assert nodes_of(dag.tasks["check-gates"]) == ["check_gates"]
    assert nodes_of(dag.tasks["unlearn-request"])[-1] == "unlearn_request"

    expected_edges = {(slug(parent.name), slug(child.name)) for child, parents in full.node_dependencies.items()
                      for parent in parents if parent not in ingestion.nodes}
    assert dag.edges == expected_edges
    assert source.count(" >> ") == len(expected_edges)

    # the request path reaches `kedro run --params` as one argument, and nothing when the param is empty
    command = dag.tasks["prepare-request"]["bash_command"].replace("kedro run", "printf '%s\\n' run", 1)
    for path, expected in (("/srv/requests/incoming/a b.csv", ["--params",
                                                               "deletion_request.path=/srv/requests/incoming/a b.csv"]),
                           ("", [])):
        out = subprocess.run(["bash", "-c", command], env={**os.environ, "REQUEST_PATH": path}, capture_output=True,
                             text=True, check=True).stdout.splitlines()
        assert out[out.index("--nodes") + 2:] == expected


def test_settings_from_params_and_memory_groups(tmp_path):
    _, dag = create_dag(tmp_path, "--group-by", "memory", "--params",
                        "schedule=30 3 * * *,retries=5,retry_delay=1,project_path=/opt/scrub,"
                        "request_path=requests/incoming/r.csv")
    assert dag.dag["schedule"] == "30 3 * * *" and dag.dag["default_args"]["retries"] == 5
    assert dag.dag["params"]["request_path"]["default"] == "requests/incoming/r.csv"
    groups = {task_id: nodes_of(task) for task_id, task in dag.tasks.items()}
    assert all(task["cwd"] == "/opt/scrub" for task in dag.tasks.values())
    # the splits' (and backbone's) consumers form one group with ingestion; every other node is its own task
    (big,) = [nodes for nodes in groups.values() if len(nodes) > 1]
    assert set(big) == {"load_raw_dataset", "split_dataset", "pretrain_backbone", "prepare_request",
                        "build_request_task", "unlearn_request", "evaluate_request", "audit_request"}
    assert sorted(nodes[0] for nodes in groups.values() if len(nodes) == 1) == [
        "build_request_report", "check_gates", "record_request", "register_candidate"]
