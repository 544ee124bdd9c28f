"""`tvgw models list/promote/rollback` in-process, on a real database and model store: roles
as `tvgw resolve` enrolls them, a human's promotion and rollback recorded with who and why, and
refusals that say what to do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ml_integration.store import save_version
from storage import Storage
from storage.champions import list_events
from tvgw.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def roles_listed(out: str) -> dict[str, str]:
    """version → role, from the table `tvgw models list` prints."""
    table = [line.split() for line in out.splitlines() if line.startswith("BTC/USDT 1h ")]
    return {cells[2]: cells[3] for cells in table if len(cells) > 3 and cells[2].startswith("v")}


def test_list_promote_and_rollback(cli_env: Path, trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    models = cli_env / "models"
    assert run(capsys, "models", "list")[1].startswith("no model versions")
    save_version(trained, models, "BTC/USDT", "1h", version="v1")
    assert run(capsys, "resolve")[0] == 0  # enrolls v1: the market's first model, champion directly
    save_version(trained, models, "BTC/USDT", "1h", version="v2")
    code, out, _ = run(capsys, "resolve")
    assert code == 0 and "challenger v2" in out
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and roles_listed(out) == {"v1": "champion", "v2": "challenger"}
    assert "no resolved alerts both versions predicted yet: waiting: 0 of 100" in out
    assert "ML-driven sizing: on" in out

    code, out, err = run(capsys, "models", "promote", "v2", "--reason", "checked by hand", "--by", "ana")
    assert code == 0, err
    assert "v2 is champion now (was v1); promote by ana: checked by hand" in out
    assert roles_listed(run(capsys, "models", "list")[1]) == {"v1": "retired", "v2": "champion"}
    code, out, err = run(capsys, "models", "rollback", "--symbol", "BTC/USDT", "--reason", "worse live")
    assert code == 0 and "v1 is champion now (was v2); rollback by" in out, err
    assert roles_listed(run(capsys, "models", "list")[1]) == {"v1": "champion", "v2": "retired"}
    made = list_events(Storage(cli_env / "tvgw.sqlite"), limit=2)
    assert [(e.kind, e.actor, e.reason) for e in made] == [
        ("rollback", made[0].actor, "worse live"), ("promote", "ana", "checked by hand")
    ]  # fmt: skip


def test_refusals_say_what_to_do(cli_env: Path, trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "models", "rollback", "--reason", "x")
    assert code == 2 and "name the market with --symbol" in err and "none yet" in err
    save_version(trained, cli_env / "models", "BTC/USDT", "1h", version="v1")
    save_version(
        copy.deepcopy(trained), cli_env / "models", "ETH/USDT", "1h", version="v1"
    )  # the shared one stays BTC
    run(capsys, "resolve")
    code, _, err = run(capsys, "models", "promote", "v1", "--reason", "x")
    assert code == 2 and "BTC/USDT 1h, ETH/USDT 1h" in err  # two markets: which one?
    code, _, err = run(capsys, "models", "promote", "v9", "--symbol", "BTC/USDT", "--reason", "x")
    assert code == 1 and "no saved version 'v9' of BTC/USDT 1h" in err and "v1" in err
    code, _, err = run(capsys, "models", "rollback", "--symbol", "ETH/USDT", "--reason", "x")
    assert code == 1 and "was the market's first: there is no earlier champion" in err
    with pytest.raises(SystemExit):
        main(["models", "promote", "v1", "--symbol", "BTC/USDT"])  # --reason is required
    assert "--reason" in capsys.readouterr().err
