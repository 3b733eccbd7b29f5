"""The kedro-airflow recipe: the generated DAG file compiles and has one task per node."""

from __future__ import annotations

import ast

from conftest import copy_project, kedro


def test_generated_dag_has_one_task_per_node(tmp_path):
    project = copy_project(tmp_path)
    result = kedro(project, "airflow", "create", "--pipelines", "deletion_request", "--env", "test",
                   "--target-dir", "airflow_dags")
    assert result.returncode == 0, result.stderr[-3000:]
    dags = list((project / "airflow_dags").glob("*.py"))
    assert len(dags) == 1
    source = dags[0].read_text()
    compile(source, str(dags[0]), "exec")
    tree = ast.parse(source)
    # kedro-airflow writes one @task per task, each calling _run_kedro_node(node_names=[...])
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "_run_kedro_node"]
    per_task = [ast.literal_eval(kw.value) for call in calls for kw in call.keywords if kw.arg == "node_names"]
    from scrub_unlearning.pipelines import deletion_request, ingestion

    pipeline = deletion_request.create_pipeline(ingestion.create_pipeline())
    assert sorted(map(tuple, per_task)) == sorted((n.name,) for n in pipeline.nodes), "one task per node"
    edges = source.count(" >> ")
    expected_edges = sum(len(deps) for deps in pipeline.node_dependencies.values())
    assert edges == expected_edges
