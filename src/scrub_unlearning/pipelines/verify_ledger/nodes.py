"""The ledger's verdict: its chain and steps (serving/ledger.py), then the ledger against the Model Registry:
every promoted request's version there with matching tags, the serving alias on the last promoted version, no
version claiming ledger lines the ledger lacks; versions nothing explains are tagged orphans and listed."""

from __future__ import annotations

import logging

from ...mlflow_edge import model_registry
from ...serving import ORPHAN_TAG, Verdict, check_against_registry
from ..deletion_request.nodes import request_ledger

log = logging.getLogger(__name__)


class LedgerBroken(RuntimeError):
    """The verdict is BROKEN; the message is the verdict with its reasons."""


def ledger_verdict(request: dict, registry_config: dict, tag_orphans: bool = True) -> Verdict:
    """The verdict on the ledger the `deletion_request` parameters name against the registry `registry_config`
    names (the active MLflow registry); with `tag_orphans`, orphan versions get `ledger_status=orphan`."""
    ledger = request_ledger(request)
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    verdict = check_against_registry(ledger, model_registry.versions(name), model_registry.serving_version(name, alias))
    if tag_orphans:
        for orphan in verdict.orphans:
            if not orphan["tagged"]:
                model_registry.set_version_tags(name, orphan["version"], {ORPHAN_TAG: "orphan",
                                                                          "ledger_note": orphan["reason"]})
                orphan["tagged"] = True
    return verdict


def verify_ledger(request: dict, registry_config: dict) -> dict:
    """Log the verdict (OK / BROKEN with the reasons) and return it; raise `LedgerBroken` when it is BROKEN, so
    `kedro run --pipelines=verify_ledger` exits non-zero."""
    verdict = ledger_verdict(request, registry_config)
    text = verdict.text()
    for line in text.splitlines():
        (log.info if verdict.ok else log.error)("%s", line)
    if not verdict.ok:
        raise LedgerBroken(text)
    return verdict.as_dict()
