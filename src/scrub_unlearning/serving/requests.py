"""Deletion requests: "a user asked us to delete their data from the model we serve".

A request is a CSV file with the columns ``request_id,id``, one row per example id, every row carrying the same
``request_id``. Example ids are row indices of the source training arrays (``Splits.ids["train"]``,
``TrainingSet.ids``). Reading and validating a request fails loudly, naming the file and the bad values: a deletion
request is either processed whole or not at all, never silently in part.

``request_id`` is stored in clear in the ledger (see ``ledger.py``), so it must be an opaque ticket number, not a
name or an e-mail address.
"""

from __future__ import annotations

import csv
import operator
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

COLUMNS = ("request_id", "id")
SHOWN = 10  # how many offending values an error message lists
_INT64_MAX = 2**63 - 1
_DECIMAL = re.compile(r"[0-9]+")


def _first(values: Iterable, limit: int = SHOWN) -> str:
    """`[a, b, c]`, or `[a, b, c, ...]` when there are more than `limit`."""
    values = list(values)
    shown = ", ".join(str(value) for value in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _as_ids(ids, what: str) -> torch.Tensor:
    """A 1-D int64 tensor of non-negative ids (duplicates are the caller's business)."""
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{what}: ids must be integers, got a tensor of dtype {ids.dtype}")
        tensor = ids.detach().to("cpu", torch.int64).reshape(-1)
    else:
        values = list(ids)
        bad = [value for value in values if not _is_integer(value)]
        if bad:
            raise TypeError(f"{what}: ids must be integers; {len(bad)} are not, e.g. {_first(map(repr, bad))}")
        ints = [operator.index(value) for value in values]
        huge = [value for value in ints if value > _INT64_MAX]
        if huge:
            raise ValueError(f"{what}: ids must fit in int64; {len(huge)} do not, e.g. {_first(huge)}")
        tensor = torch.tensor(ints, dtype=torch.int64)
    negative = tensor[tensor < 0]
    if len(negative):
        raise ValueError(f"{what}: ids must be non-negative; {len(negative)} are not, e.g. {_first(negative.tolist())}")
    return tensor


def _is_integer(value) -> bool:
    """Python ints and numpy / torch integer scalars (they define `__index__`); not bools, floats or strings."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


@dataclass(eq=False)
class DeletionRequest:
    """One deletion request: its id and the example ids to forget (int64, sorted, unique, non-empty).

    The constructor checks and sorts `ids`; duplicated ids are an error, not silently merged."""

    request_id: str
    ids: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id.strip():
            raise ValueError(f"deletion request: request_id must be a non-empty string, got {self.request_id!r}")
        self.request_id = self.request_id.strip()
        what = f"deletion request '{self.request_id}'"
        ids = _as_ids(self.ids, what)
        if len(ids) == 0:
            raise ValueError(f"{what}: the request is empty (no ids to forget)")
        ids = ids.sort().values
        repeated = ids[1:][ids[1:] == ids[:-1]].unique()
        if len(repeated):
            raise ValueError(
                f"{what}: {len(repeated)} id(s) appear more than once: {_first(repeated.tolist())}"
            )
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeletionRequest):
            return NotImplemented
        return self.request_id == other.request_id and torch.equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]  # mutable tensor inside


def read_request(path: str | Path) -> DeletionRequest:
    """Read a deletion request CSV (`request_id,id`, one row per example id, one request per file).

    Raises FileNotFoundError when the file does not exist, and ValueError naming the file and the problem for:
    missing columns, more than one request_id, empty request_ids, ids that are not non-negative decimal integers,
    an empty request (no rows), and duplicated ids (the first few are listed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"deletion request file not found: {path}")
    where = f"deletion request {path}"
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    rows = [(line, row) for line, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{where}: the file is empty; expected a header '{','.join(COLUMNS)}' and one row per id")
    header_line, header = rows[0]
    header = [name.strip() for name in header]
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; found {header}, expected {list(COLUMNS)}")
    repeated_columns = sorted(name for name, n in Counter(header).items() if n > 1)
    if repeated_columns:
        raise ValueError(f"{where}: column(s) {repeated_columns} appear more than once in the header")
    request_column, id_column = header.index("request_id"), header.index("id")

    request_ids: dict[str, int] = {}
    empty_request_ids, bad_ids, too_long, ids = [], [], [], []
    for line, row in rows[1:]:
        if len(row) > len(header):
            too_long.append(line)
            continue
        cells = [cell.strip() for cell in row] + [""] * (len(header) - len(row))
        request_id, value = cells[request_column], cells[id_column]
        if request_id:
            request_ids.setdefault(request_id, line)
        else:
            empty_request_ids.append(line)
        if _DECIMAL.fullmatch(value) and int(value) <= _INT64_MAX:
            ids.append(int(value))
        else:
            bad_ids.append(f"line {line}: {value!r}")
    if too_long:
        raise ValueError(f"{where}: line(s) {_first(too_long)} have more fields than the header {header}")
    if empty_request_ids:
        raise ValueError(f"{where}: empty request_id on line(s) {_first(empty_request_ids)}")
    if len(request_ids) > 1:
        raise ValueError(
            f"{where}: one file must hold one request, found {len(request_ids)} request_ids: "
            f"{_first(repr(name) for name in request_ids)}"
        )
    if bad_ids:
        raise ValueError(
            f"{where}: {len(bad_ids)} id(s) are not non-negative integers: {_first(bad_ids)}"
        )
    if not ids:
        raise ValueError(f"{where}: the request is empty (a header but no ids)")
    counts = Counter(ids)
    duplicated = sorted(value for value, n in counts.items() if n > 1)
    if duplicated:
        raise ValueError(f"{where}: {len(duplicated)} id(s) appear more than once: {_first(duplicated)}")
    (request_id,) = request_ids
    return DeletionRequest(request_id, torch.tensor(sorted(ids), dtype=torch.int64))


def validate_request(request: DeletionRequest, training_ids: torch.Tensor,
                     already_forgotten: set[int] | None = None) -> None:
    """Refuse the whole request unless every id is in the training set and none was forgotten before.

    `already_forgotten` is what `Ledger.forgotten_ids(request.ids)` returns. Check `Ledger.find` first: a rerun of
    a request already in the ledger is a no-op, and would otherwise fail here as "already forgotten".

    Raises ValueError listing the first unknown ids (and how many), and the ids already forgotten by an earlier
    request; both problems are reported together. Never returns on a partial match."""
    what = f"deletion request '{request.request_id}'"
    known = _as_ids(training_ids, f"{what}: training ids")
    ids = request.ids
    unknown = ids[~torch.isin(ids, known)].tolist()
    problems = []
    if unknown:
        problems.append(
            f"{len(unknown)} of {len(ids)} id(s) are not in the training set: {_first(unknown)}"
        )
    if already_forgotten:
        forgotten = sorted(set(ids.tolist()) & {int(value) for value in already_forgotten})
        if forgotten:
            problems.append(
                f"{len(forgotten)} id(s) were already forgotten by an earlier request: {_first(forgotten)}"
            )
    if problems:
        raise ValueError(f"{what}: {'; '.join(problems)}; nothing was processed")
