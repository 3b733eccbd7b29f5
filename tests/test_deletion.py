"""Serving a deletion request end to end: register, unlearn, gate, promote, ledger, idempotence, bad requests; the
request's steps against crashes at each of them (nodes with an in-memory registry); requests of 1-3 ids; the
ledger's verdict."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, kedro

SAMPLE_IDS = [32, 71, 109, 120, 145, 201, 230, 245, 261, 281, 289, 358, 376, 401, 419, 432, 488, 503, 521, 633]
OTHER_CLASS_5_IDS = [33, 102, 117]  # training ids of digit 5 that the sample does not contain


def write_request(folder: Path, name: str, request_id: str, ids: list[int]) -> str:
    path = folder / f"{name}.csv"
    path.write_text("request_id,id\n" + "".join(f"{request_id},{i}\n" for i in ids))
    return str(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("serving"))
    result = kedro(root, "run", "--env", "test", "--pipelines", "register")
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def model_name(project: Path) -> str:
    """The registered model's name in the `test` environment (its own, else base's)."""
    for env in ("test", "base"):
        parameters = yaml.safe_load((project / "conf" / env / "parameters.yml").read_text()) or {}
        name = (parameters.get("registry") or {}).get("model_name")
        if name:
            return name
    raise AssertionError("no registry.model_name in conf/test or conf/base")


def versions(project: Path) -> list:
    return client(project).search_model_versions(f"name='{model_name(project)}'")


def serving(project: Path) -> str:
    return str(client(project).get_model_version_by_alias(model_name(project), "serving").version)


def client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}",
                        registry_uri=f"sqlite:///{project / 'mlflow.db'}")


def summary(project: Path) -> dict:
    latest = sorted((project / "data" / "test" / "08_reporting" / "deletion_request" / "summary.json").iterdir())[-1]
    return json.loads((latest / "summary.json").read_text())


def ledger_of(project: Path):
    from scrub_unlearning.serving import Ledger

    key = bytes.fromhex((project / "conf" / "local" / "ledger.key").read_text().strip())
    return Ledger(project / "data" / "test" / "08_reporting" / "deletion_ledger.jsonl", key)


def ledger_lines(project: Path) -> list[dict]:
    """The ledger's requests (one flat record per attempt), verified."""
    return ledger_of(project).records()


def test_the_original_is_registered_and_serving(served):
    assert serving(served) == "1"
    version = client(served).get_model_version(model_name(served), "1")
    assert version.tags["role"] == "original" and "data_version" in version.tags
    assert float(version.tags["metric.test_error"]) < 10
    manifest = json.loads(version.tags["shadow_manifest"])  # its audit shadows, trained at registration
    assert manifest["num_shadows"] == 4 and len(manifest["keys"]) == 4 and manifest["earlier_requests"] == 0
    store = served / "data" / "test" / "06_models" / "registry" / "audit_shadows"
    assert all((store / f"{key}.safetensors").is_file() for key in manifest["keys"])
    artifacts = client(served).list_artifacts(manifest["run_id"], "audit_shadows")
    assert sorted(Path(a.path).stem for a in artifacts) == sorted(manifest["keys"]), "shadows logged to MLflow"


def test_the_sample_request_is_served_and_a_rerun_does_nothing(served):
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request")
    assert result.returncode == 0, result.stderr[-4000:]
    first = summary(served)
    assert first["version_before"] == "1" and first["version_after"] == "2" and first["promoted"]
    assert first["method"] == "scrub_r" and first["count"] == 20
    assert serving(served) == "2"
    audit = first["audit"]  # audited by default: the registration's shadows unlearned the request
    assert audit["num_shadows"] == 4 and audit["earlier_requests"] == 0 and audit["registration_version"] == "1"
    assert sum(audit["held_per_shadow"]) == 2 * 20, "every requested example is held by half of the shadows"
    assert 0.0 <= audit["ulira"]["auc"] <= 1.0 and audit["served"]["request"]["n"] == 20
    assert audit["served"]["chance"]["n"] == 20 and set(first["gates"]["checks"]) == {"ulira_auc",
                                                                                      "flagged_share_excess"}
    assert [v["version"] for v in first["chain"]] == ["1"]
    tags = client(served).get_model_version(model_name(served), "2").tags
    shadows = json.loads(tags["shadow_manifest"])
    assert tags["audit_summary"].startswith("U-LiRA AUC ") and "flagged " in tags["audit_summary"]
    assert shadows["earlier_requests"] == 1 and shadows["parent_version"] == "1"
    original_keys = json.loads(client(served).get_model_version(model_name(served), "1").tags["shadow_manifest"])
    assert all(a != b for a, b in zip(shadows["keys"], original_keys["keys"], strict=True)), "each shadow unlearned"
    assert tags["request_id"] == "req-0001" and tags["method"] == "scrub_r" and tags["replaces_version"] == "1"
    entries = ledger_lines(served)
    assert len(entries) == 1 and entries[0]["count"] == 20 and entries[0]["version_after"] == "2"
    assert entries[0]["lines"] == {"intent": 1, "registered": 2, "recorded": 3, "promoted": 4}
    assert tags["ledger_attempt"] == entries[0]["attempt"] and tags["ledger_line"] == "1"
    assert len(tags["weights_sha256"]) == 64 and first["ledger_lines"] == entries[0]["lines"]
    text = (served / "data" / "test" / "08_reporting" / "deletion_ledger.jsonl").read_text()
    assert not any(f'"{i}"' in text or f" {i}," in text or f"[{i}," in text for i in SAMPLE_IDS), "ids in clear"
    reports = served / "data" / "test" / "08_reporting" / "deletion_request" / "report.html"
    report = (sorted(reports.iterdir())[-1] / "report.html").read_text()
    assert "req-0001" in report and "Quality gates" in report and "Retrain" not in report

    again = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request")
    assert again.returncode == 0, again.stderr[-4000:]
    assert summary(served)["skipped"] is True
    assert len(versions(served)) == 2
    assert len(ledger_lines(served)) == 1
    assert len(list(reports.iterdir())) == 2, "the no-op run wrote its own report version"
    noop = (sorted(reports.iterdir())[-1] / "report.html").read_text()
    assert "Nothing was done" in noop and "no\nmodel was trained" in noop


def test_a_version_failing_the_gates_is_registered_not_promoted(served, tmp_path):
    import shutil

    # a machine without the local shadow store: the audit fetches the serving version's shadows from MLflow
    shutil.rmtree(served / "data" / "test" / "06_models" / "registry" / "audit_shadows")
    path = write_request(tmp_path, "strict", "req-0002", OTHER_CLASS_5_IDS + [147, 150])
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request", "--params",
                   f"deletion_request.path={path},deletion_request.gates.enabled=true,"
                   "deletion_request.gates.max_test_error_increase=-100")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "NOT promoted" in result.stdout + result.stderr and "test_error_increase" in result.stdout + result.stderr
    assert "4 audit shadows fetched from MLflow" in result.stdout + result.stderr
    outcome = summary(served)
    assert outcome["promoted"] is False and outcome["version_after"] == "3"
    assert not outcome["gates"]["checks"]["test_error_increase"]["passed"]
    assert 0.0 <= outcome["after"]["ulira_auc"] <= 1.0 and "ulira_auc" in outcome["gates"]["checks"]
    assert outcome["audit"]["earlier_requests"] == 1, "a second request starts from the shadows the first left"
    assert [v["version"] for v in outcome["chain"]] == ["1", "2"]
    assert serving(served) == "2"
    assert ledger_lines(served)[-1]["promoted"] is False


@pytest.mark.parametrize("ids, expected", [
    ([32, 99999], "99999"),               # not a training id
    ([33, 33, 102], "33"),               # duplicate
    ([], "empty"),                        # no ids
    ([71, 135], "71"),                    # already forgotten by req-0001
])
def test_bad_requests_fail_before_any_training(served, tmp_path, ids, expected):
    path = write_request(tmp_path, "bad", "req-bad", ids)
    before = len(versions(served))
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request", "--params",
                   f"deletion_request.path={path}")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Running node: unlearn_request" not in result.stdout + result.stderr
    assert len(versions(served)) == before


# --- the operator's command: python -m scrub_unlearning.serve_requests ---------------------------------------------

def serve_requests(project: Path, incoming: Path) -> subprocess.CompletedProcess:
    variables = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(project / "src")}
    return subprocess.run([sys.executable, "-m", "scrub_unlearning.serve_requests", "--incoming", str(incoming),
                           "--env", "test"], cwd=project, env=variables, capture_output=True, text=True, timeout=900)


def mlflow_runs(project: Path) -> int:
    registry = client(project)
    experiments = [experiment.experiment_id for experiment in registry.search_experiments()]
    return len(registry.search_runs(experiments, max_results=50000))


def snapshot(folder: Path) -> dict:
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.iterdir())}


def test_a_bad_request_moves_to_failed_with_its_reason_and_stays_there(served):
    root = served / "requests_bad"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    write_request(incoming, "unknown", "req-unknown", [99998, 99999])
    runs, count = mlflow_runs(served), len(versions(served))
    first = serve_requests(served, incoming)
    assert first.returncode == 1, first.stderr[-4000:]
    failed = root / "failed"
    assert not list(incoming.iterdir()) and (failed / "unknown.csv").is_file()
    reason = (failed / "unknown.csv.reason.txt").read_text()
    assert "99999" in reason and "not in the training set" in reason and "failed at: 20" in reason
    assert "Running node" not in first.stdout + first.stderr
    assert mlflow_runs(served) == runs and len(versions(served)) == count, "validation failed before any run"

    kept = snapshot(failed)
    second = serve_requests(served, incoming)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "no request" in second.stderr
    assert snapshot(failed) == kept, "a failed request is not retried until someone moves it back"


def test_a_request_is_served_and_the_same_request_again_is_a_noop(served, digits_splits):
    train = digits_splits.ids["train"][digits_splits.y["train"] == 3].tolist()[:5]  # no other test forgets a 3
    root = served / "requests_good"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    write_request(incoming, "good", "req-0100", train)
    before = int(serving(served))
    result = serve_requests(served, incoming)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (root / "done" / "good.csv").is_file() and not list(incoming.iterdir())
    assert int(serving(served)) == len(versions(served)) > before
    entry = ledger_lines(served)[-1]
    assert entry["request_id"] == "req-0100" and entry["promoted"] and entry["count"] == 5

    write_request(incoming, "again", "req-0100", train[::-1])
    runs, recorded = mlflow_runs(served), len(ledger_lines(served))
    again = serve_requests(served, incoming)
    assert again.returncode == 0, again.stderr[-4000:]
    output = again.stdout + again.stderr
    about = [line for line in output.splitlines() if "again.csv" in line]
    assert len(about) == 1 and "nothing to do" in about[0], output[-3000:]
    assert "Running node" not in output
    assert (root / "done" / "again.csv").is_file() and not list(incoming.iterdir())
    assert mlflow_runs(served) == runs, "a no-op request opens no MLflow run"
    assert len(ledger_lines(served)) == recorded


@pytest.mark.parametrize("outcome, expected", [
    ("raises", "RuntimeError: scrub_r failed"),
    ("not_promoted", "NOT promoted (failed gates: test_error_increase)"),
    ("nothing", "without recording the request"),
    ("interrupted", "unfinished in the ledger (last step 'intent' at line 1): move the file back"),
])
def test_a_request_whose_run_does_not_serve_it_moves_to_failed(tmp_path, outcome, expected):
    import torch

    from scrub_unlearning.serve_requests import serve_one
    from scrub_unlearning.serving import Ledger

    ledger = Ledger(tmp_path / "ledger.jsonl", bytes(range(32)))

    class Project:
        def ledger(self):
            return ledger

        def training_ids(self):
            return torch.arange(100)

    def run(path: Path) -> None:
        if outcome == "raises":
            raise RuntimeError("scrub_r failed, nothing registered: non-finite weights")
        if outcome == "not_promoted":
            gates = {"enabled": True, "passed": False, "checks": {"test_error_increase": {"passed": False}}}
            ledger.record("req-x", [1, 2], "1", "2", gates, False, "scrub_r")
        if outcome == "interrupted":
            ledger.begin("req-x", [1, 2], "1", "scrub_r")
            raise RuntimeError("killed after the intent line")

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    path = Path(write_request(incoming, "x", "req-x", [1, 2]))
    assert not serve_one(path, Project(), tmp_path / "done", tmp_path / "failed", run=run)
    assert not path.exists() and (tmp_path / "failed" / "x.csv").is_file()
    assert expected in (tmp_path / "failed" / "x.csv.reason.txt").read_text()


def test_a_request_waits_while_another_is_unfinished_and_a_broken_ledger_stops_everything(tmp_path, monkeypatch):
    import torch

    from scrub_unlearning import serve_requests
    from scrub_unlearning.serving import Ledger

    ledger = Ledger(tmp_path / "ledger.jsonl", bytes(range(32)))
    ledger.begin("req-a", [1, 2], "1", "scrub_r")  # interrupted
    ran = []

    class Project:
        def ledger(self):
            return ledger

        def training_ids(self):
            return torch.arange(100)

        def run(self, path):
            ran.append(path)

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    path = Path(write_request(incoming, "b", "req-b", [3]))
    assert serve_requests.serve_one(path, Project(), tmp_path / "done", tmp_path / "failed") is None
    assert path.is_file() and not ran, "it waits in incoming, nothing ran"

    ledger.path.write_bytes(ledger.path.read_bytes()[:-5])  # torn
    monkeypatch.setattr(serve_requests, "Project", lambda root, env: Project())
    assert serve_requests.serve(incoming, tmp_path / "done", tmp_path / "failed", tmp_path, None) == 1
    assert path.is_file() and not (tmp_path / "failed").exists(), "a broken ledger is not the request's fault"


# --- the request's steps, node by node, against an in-memory registry ----------------------------------------------

class FakeRegistry:
    """The Model Registry as `mlflow_edge.model_registry`'s functions show it to the nodes, in memory; version 1
    is the Original and serves."""

    def __init__(self, original) -> None:
        from scrub_unlearning.models import ModelBundle

        self.models, self.tags, self.aliases = {"1": ModelBundle.of(original)}, {"1": {"role": "original"}}, {}
        self.aliases["serving"] = "1"

    def register_model(self, model, name, tags, metrics=None, input_example=None) -> str:
        from scrub_unlearning.mlflow_edge.model_registry import _tag_text

        version = str(len(self.models) + 1)
        self.models[version] = model
        self.tags[version] = {key: _tag_text(value) for key, value in
                              {**tags, **{f"metric.{k}": v for k, v in (metrics or {}).items()}}.items()}
        return version

    def versions(self, name, request_id=None) -> list[dict]:
        found = [{"version": v, "tags": dict(t)} for v, t in self.tags.items()]
        return [v for v in found if request_id is None or v["tags"].get("request_id") == request_id]

    def set_version_tags(self, name, version, tags) -> None:
        self.tags[str(version)].update({key: str(value) for key, value in tags.items()})

    def serving_version(self, name, alias):
        return self.aliases.get(alias)

    def promote(self, name, version, alias) -> None:
        self.aliases[alias] = version

    def load_registered(self, name, version):
        return self.models[version]

    def input_example_of(self, name, version):
        return None

    def of_request(self, request_id: str) -> list[str]:
        return [v["version"] for v in self.versions("", request_id)]


REGISTRY = {"model_name": "fake", "alias": "serving"}
RUNTIME = {"device": "cpu"}


def _conf(name: str) -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "base" / name).read_text())


METHOD_PARAMS = _conf("parameters_unlearning.yml")["method_params"]
TRAINING = _conf("parameters.yml")["training"]


@pytest.fixture
def registry(monkeypatch, digits_splits):
    """An in-memory registry whose serving version 1 is an untrained SmallCNN (these tests need no good model)."""
    from scrub_unlearning.mlflow_edge import model_registry
    from scrub_unlearning.models import build_model, model_spec

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    fake = FakeRegistry(build_model(model_spec("small_cnn", 10, digits_splits.image_shape, digits_splits.mean,
                                               digits_splits.std)))
    for name in ("register_model", "versions", "set_version_tags", "serving_version", "promote", "load_registered",
                 "input_example_of"):
        monkeypatch.setattr(model_registry, name, getattr(fake, name))
    monkeypatch.delenv("SCRUB_LEDGER_KEY", raising=False)
    return fake


@pytest.fixture
def quick_unlearning(monkeypatch):
    """The method replaced by a deterministic nudge of the weights: these tests are about the steps, not SCRUB."""
    import torch

    from scrub_unlearning.methods.runner import MethodResult
    from scrub_unlearning.pipelines.deletion_request import nodes

    calls = []

    def run(method, model, task, params_of, device):
        calls.append(method)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(0.99)
        return MethodResult(method, model, seconds=0.01)

    monkeypatch.setattr(nodes, "run_with_rewound", run)
    return calls


def request_params(tmp_path: Path, ids: list[int], request_id: str = "req-n", **changes) -> dict:
    return {"path": write_request(tmp_path, request_id, request_id, ids), "method": "scrub_r", "method_params": {},
            "seed": 1, "ledger_path": str(tmp_path / "ledger.jsonl"), "ledger_key_file": str(tmp_path / "ledger.key"),
            "gates": {"enabled": False}, **changes}


def run_request(splits, request: dict) -> dict:
    """The deletion_request nodes in order, their outputs through JSON as the catalog stores them."""
    from scrub_unlearning.pipelines.deletion_request import nodes

    def saved(value):
        return json.loads(json.dumps(value))

    prepared = saved(nodes.prepare_request(splits, request))
    task = saved(nodes.build_request_task(splits, prepared, request))
    result, before, after = nodes.unlearn_request(splits, task, request, REGISTRY, METHOD_PARAMS, TRAINING, RUNTIME)
    result = saved(result)
    comparison = saved(nodes.evaluate_request(splits, task, result, before, after, request))
    audit = saved(nodes.audit_request(splits, task, result, before, after, request, REGISTRY, METHOD_PARAMS, TRAINING,
                                      RUNTIME))
    gates = saved(nodes.check_gates(comparison, audit, request))
    registration = saved(nodes.register_candidate(prepared, result, after, comparison, audit, gates, REGISTRY,
                                                  request))
    summary = saved(nodes.record_request(prepared, result, comparison, audit, gates, registration, request, REGISTRY))
    nodes.build_request_report(summary)
    return summary


def steps(request: dict, request_id: str = "req-n") -> list[str]:
    from scrub_unlearning.pipelines.deletion_request.nodes import request_ledger

    return [line["step"] for line in request_ledger(request).entries() if line["request_id"] == request_id]


class Crash(Exception):
    """A kill, at one step."""


def _crash(*args, **kwargs):
    raise Crash("killed")


def _after(function):
    def crashing(*args, **kwargs):
        function(*args, **kwargs)
        raise Crash("killed after the step")

    return crashing


@pytest.mark.parametrize("where", ["intent", "register", "registered", "recorded", "promote", "promoted"])
def test_a_crash_at_any_step_then_a_rerun_serves_the_request_exactly_once(tmp_path, registry, quick_unlearning,
                                                                          digits_splits, monkeypatch, where):
    from scrub_unlearning.serving import Ledger

    crashes = {  # what raises: the step's own action, before ("intent", "register", "promote") or after it is done
        "intent": (Ledger, "begin", _crash),
        "register": (registry, "register_model", _crash),
        "registered": (Ledger, "mark_registered", _crash),  # the version exists, its line is not written
        "recorded": (Ledger, "mark_recorded", _crash),
        "promote": (registry, "promote", _crash),
        "promoted": (Ledger, "mark_promoted", _crash),      # the alias moved, its line is not written
    }
    owner, name, replacement = crashes[where]
    request = request_params(tmp_path, [3, 13, 45])  # < 4 ids: no basic MIA to fit, these tests are about steps
    with monkeypatch.context() as patch:
        from scrub_unlearning.mlflow_edge import model_registry

        target = model_registry if owner is registry else owner
        patch.setattr(target, name, replacement)
        with pytest.raises(Crash):
            run_request(digits_splits, request)
    done_before = {"intent": [], "register": ["intent"], "registered": ["intent"], "recorded": ["intent", "registered"],
                   "promote": ["intent", "registered", "recorded"], "promoted": ["intent", "registered", "recorded"]}
    assert steps(request) == done_before[where]
    if where == "registered":
        assert registry.of_request("req-n") == ["2"], "the version exists without its line"

    summary = run_request(digits_splits, request)
    assert summary["promoted"] and summary["version_before"] == "1" and summary["version_after"] == "2"
    assert registry.of_request("req-n") == ["2"] and len(registry.models) == 2, "exactly one version"
    assert registry.aliases["serving"] == "2"
    assert steps(request) == ["intent", "registered", "recorded", "promoted"], "each step once"
    # nothing registered before the crash: trained again; else the rerun adopted the version and trained nothing
    assert len(quick_unlearning) == (2 if where in ("intent", "register") else 1)

    again = run_request(digits_splits, request)
    assert again["skipped"] is True and len(registry.models) == 2 and len(steps(request)) == 4, "no replay"


def test_a_second_version_of_one_attempt_is_tagged_orphan(tmp_path, registry, quick_unlearning, digits_splits,
                                                          monkeypatch):
    from scrub_unlearning.pipelines.verify_ledger.nodes import ledger_verdict
    from scrub_unlearning.serving import Ledger

    request = request_params(tmp_path, [3, 13])
    with monkeypatch.context() as patch:
        patch.setattr(Ledger, "mark_registered", _crash)
        with pytest.raises(Crash):
            run_request(digits_splits, request)
    registry.register_model(registry.models["2"], "fake", registry.tags["2"])  # a second run raced the first
    assert ledger_verdict(request, REGISTRY).ok  # both wait for the rerun: not orphans yet

    summary = run_request(digits_splits, request)
    assert summary["version_after"] == "2" and registry.aliases["serving"] == "2"
    assert registry.tags["3"]["ledger_status"] == "orphan" and "version 2 was adopted" in registry.tags["3"][
        "ledger_note"]
    assert [o["version"] for o in summary["orphans"]] == ["3"]
    verdict = ledger_verdict(request, REGISTRY)
    assert verdict.ok and [o["version"] for o in verdict.orphans] == ["3"], verdict.text()


def test_a_version_outside_the_ledger_is_tagged_orphan_and_lost_lines_refuse_a_replay(tmp_path, registry,
                                                                                       quick_unlearning,
                                                                                       digits_splits):
    from scrub_unlearning.pipelines.verify_ledger.nodes import ledger_verdict
    from scrub_unlearning.serving import LedgerError

    registry.register_model(registry.models["1"], "fake", {"role": "unlearned", "request_id": "req-n"})
    request = request_params(tmp_path, [3, 13])
    summary = run_request(digits_splits, request)
    assert summary["version_after"] == "3" and [o["version"] for o in summary["orphans"]] == ["2"]
    assert registry.tags["2"]["ledger_status"] == "orphan"
    verdict = ledger_verdict(request, REGISTRY)
    assert verdict.ok and "ledger verdict: OK" in verdict.text() and "orphan: version 2" in verdict.text()

    Path(request["ledger_path"]).write_text("")  # every line of the request cut off: the chain cannot see it
    broken = ledger_verdict(request, REGISTRY)
    assert not broken.ok and "after ledger line 1" in broken.text() and "serving alias points to version 3" in \
        broken.text()
    with pytest.raises(LedgerError, match="lost lines"):
        run_request(digits_splits, request)
    assert len(registry.models) == 3 and registry.aliases["serving"] == "3", "never replayed"


@pytest.mark.parametrize("ids", [[3], [3, 13], [3, 13, 45]])
def test_requests_of_one_to_three_ids_are_served_with_the_mia_not_applicable(tmp_path, registry, digits_splits,
                                                                             quick_unlearning, ids):
    request = request_params(tmp_path, ids, gates={"enabled": True, "max_test_error_increase": 50.0,
                                                   "mia_band": [35.0, 65.0]})
    summary = run_request(digits_splits, request)
    assert summary["promoted"] and summary["count"] == len(ids)
    assert math.isnan(summary["after"]["mia_basic"]) and math.isnan(summary["before"]["mia_basic"])
    assert "needs at least 4 members" in summary["not_applicable"]["mia_basic"]
    check = summary["gates"]["checks"]["mia_basic_in_band"]
    assert check["passed"] and check["applicable"] is False and "skipped: basic MIA needs" in check["note"]
    assert summary["gates"]["checks"]["test_error_increase"]["passed"]


def test_a_request_of_one_id_is_served_by_scrub_r_itself(tmp_path, registry, digits_splits):
    request = request_params(tmp_path, [3], method_params={"scrub": {"epochs": 1, "msteps": 1, "retain_batch": 256,
                                                                     "lr_decay_epochs": []}})
    summary = run_request(digits_splits, request)
    assert summary["promoted"] and summary["method"] == "scrub_r" and summary["count"] == 1
    assert summary["not_applicable"]["mia_basic"] and registry.aliases["serving"] == "2"
    assert 0 <= summary["after"]["test_error"] <= 100


def test_the_verify_command_and_the_real_registry(served, monkeypatch):
    """After the requests served above (this module's tests run in order): the served project's ledger is OK
    against its MLflow registry; an edited field makes `verify` print BROKEN with the line and exit 1."""
    from scrub_unlearning.pipelines.verify_ledger.nodes import ledger_verdict

    db = f"sqlite:///{served / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", db)
    monkeypatch.delenv("SCRUB_LEDGER_KEY", raising=False)
    ledger = ledger_of(served)
    params = {"ledger_path": str(ledger.path), "ledger_key_file": str(served / "conf" / "local" / "ledger.key")}
    verdict = ledger_verdict(params, {"model_name": model_name(served)}, tag_orphans=False)
    assert verdict.ok and verdict.lines >= 4 and not verdict.orphans, verdict.text()

    original = ledger.path.read_bytes()
    lines = [json.loads(line) for line in original.decode().splitlines()]
    assert lines[2]["step"] == "recorded" and lines[2]["promote"] is True
    lines[2]["promote"] = False  # "not promoted": the request would be served again
    ledger.path.write_text("".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines))
    try:
        variables = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(served / "src")}
        result = subprocess.run([sys.executable, "-m", "scrub_unlearning.serve_requests", "verify", "--env", "test"],
                                cwd=served, env=variables, capture_output=True, text=True, timeout=300)
    finally:
        ledger.path.write_bytes(original)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert "ledger verdict: BROKEN" in result.stdout and "line 3: authentication failed" in result.stdout
