"""The thread count a command runs with: the cores this process may use less its loader workers, at least one; a
one-line note when the machine is busy; the user's OMP_NUM_THREADS kept; and the caller's count back afterwards,
so calling a command from Python changes nothing of the process."""

import pytest
import torch

import inceptionnext.cli.predict as predict_cli
import inceptionnext.cli.train as train_cli
import inceptionnext.cli.validate as validate_cli
from inceptionnext.cli import main
from inceptionnext.utils import threads, workers


@pytest.fixture
def machine(monkeypatch):
    """A machine of `cores` cores (as the process's affinity gives them) and a 1-minute load average of `load`, with
    no OMP_NUM_THREADS, and torch at one thread per core as it starts; the test's own count comes back after."""
    before = torch.get_num_threads()

    def set_machine(cores: int, load: float):
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        monkeypatch.setattr(workers, "available_cpus", lambda: cores)
        monkeypatch.setattr(threads, "available_cpus", lambda: cores)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
        torch.set_num_threads(cores)

    yield set_machine
    torch.set_num_threads(before)


def test_threads_are_the_cores_less_the_loader_workers_at_least_one(machine):
    machine(8, 0.0)
    assert threads.compute_threads() == 8 and threads.compute_threads(workers=2) == 6
    assert threads.compute_threads(workers=8) == 1 and threads.compute_threads(workers=20) == 1
    assert threads.compute_threads(workers=1, processes=4) == 1  # 4 processes share the 8 cores: 2 each
    machine(2, 0.0)
    assert threads.compute_threads(workers=2) == 1  # the 2-core machine with the default 2 workers
    torch.set_num_threads(1)  # never more than the count torch runs with
    assert threads.compute_threads() == 1


def test_busy_note_only_when_the_load_is_well_above_the_cores():
    note = threads.busy_note(cores=2, load=9.34)
    assert note.startswith("note: this machine is busy (1-minute load average 9.3 on the 2 cores this process")
    assert "OMP_NUM_THREADS=1" in note and "\n" not in note
    assert threads.busy_note(cores=2, load=2.9) is None and threads.busy_note(cores=16, load=20.0) is None
    assert "on the 1 core this" in threads.busy_note(cores=1, load=4.0)


def test_command_threads_sets_the_count_for_the_command_and_restores_it(machine, monkeypatch, capsys):
    machine(4, 11.0)
    with threads.command_threads(workers=1) as n:
        assert n == 3 == torch.get_num_threads()
    assert torch.get_num_threads() == 4
    assert capsys.readouterr().err.count("note: this machine is busy (1-minute load average 11.0 on the 4 cores") == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice: kept, and no advice given
    with threads.command_threads(workers=1) as n:
        assert n == 4 == torch.get_num_threads()
    assert capsys.readouterr().err == ""


class Seen(Exception):
    """Ends a command where the test has seen what it runs with."""


def record(seen):
    def run(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Seen()

    return run


def test_validate_train_and_predict_run_on_the_cores_less_their_workers(machine, monkeypatch, capsys):
    machine(4, 0.5)
    seen = []
    monkeypatch.setattr(validate_cli, "run_validation", record(seen))
    with pytest.raises(Seen):
        main(["validate", "inceptionnext_a", "--dataset", "digits", "--workers", "1"])
    monkeypatch.setattr(train_cli, "fit", record(seen))
    with pytest.raises(Seen):
        train_cli.cli(["--model", "inceptionnext_a", "--dataset", "digits", "--workers", "3"])
    with pytest.raises(Seen):  # the default workers: the 4 cores, at most 8
        train_cli.cli(["--model", "inceptionnext_a", "--dataset", "digits"])
    monkeypatch.setattr(predict_cli, "cli", record(seen))
    with pytest.raises(Seen):
        main(["predict", "inceptionnext_a", "x.png"])
    assert seen == [3, 1, 1, 4] and torch.get_num_threads() == 4  # and the caller's count is back
    assert "busy" not in capsys.readouterr().err  # a load of 0.5 on 4 cores is no news


def test_a_busy_machine_is_named_once_by_a_command_that_runs_a_model(machine, monkeypatch, capsys):
    machine(2, 9.0)
    monkeypatch.setattr(predict_cli, "cli", lambda argv, prog: 0)
    assert main(["predict", "inceptionnext_a", "x.png"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "note: this machine is busy (1-minute load average 9.0 on the 2 cores" in err
    assert main(["list", "inceptionnext_a"]) == 0  # a listing runs no model: no note
    assert "busy" not in capsys.readouterr().err
