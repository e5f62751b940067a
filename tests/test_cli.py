"""The ``python -m secbook bench`` command, run in-process: flags, errors, the table and the CSV."""
import sys
import types

import pandas as pd
import pytest

from secbook import paths
from secbook.cli import main


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--technique", "--prompt-len", "--new-tokens", "--batch", "--repeats", "--dtype",
                 "--device", "--out", "--suite", "--warmup", "--layers", "--no-save", "--threads", "--rungs", "--transforms",
                 "int8-dynamic"):
        assert flag in out


@pytest.mark.parametrize("argv, word", [
    (["bench", "--batch", "0"], "--batch"),
    (["bench", "--new-tokens", "1"], "--new-tokens"),
    (["bench", "--repeats", "many"], "--repeats"),
    (["bench", "--technique", "magic"], "--technique"),
    (["bench", "--dtype", "int3"], "--dtype"),
    (["bench", "--suite", "everything"], "--suite"),
    (["bench", "--threads", "0"], "--threads"),
])
def test_bad_flags_one_line_exit_2(capsys, argv, word):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err and "Traceback" not in err


def test_unknown_model_one_line(capsys):
    assert main(["bench", "--model", "no-such-model", "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-model" in err and "replica:smollm2-135m" in err


def test_generate_suite_missing(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "secbook.ladder", types.ModuleType("secbook.ladder"))
    assert main(["bench", "--suite", "generate", "--no-save"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not available" in err


def test_generate_suite_dispatch(capsys, monkeypatch, tmp_path):
    fake = types.ModuleType("secbook.ladder")
    seen = {}

    def run_generate_suite(args, save=True):
        seen["model"], seen["save"] = args.model, save
        return pd.DataFrame([{"loop": "hf", "tokens_per_s": 12.5}])

    fake.run_generate_suite = run_generate_suite
    monkeypatch.setitem(sys.modules, "secbook.ladder", fake)
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    assert main(["bench", "--suite", "generate", "--model", "tiny", "--out", "gen_unit"]) == 0
    assert seen["model"] == "tiny" and "12.5" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "gen_unit.csv")["loop"].tolist() == ["hf"]
    assert seen["save"] is False  # --out: a separate CSV, not merged into the ladder
    assert main(["bench", "--suite", "generate", "--model", "tiny", "--no-save"]) == 0
    assert seen["save"] is False and not (tmp_path / "generate_ladder.csv").exists()


def test_bench_runs_and_writes_csv(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    rc = main(["bench", "--model", "replica:smollm2-135m", "--layers", "1", "--technique", "fp32", "bf16",
               "--prompt-len", "4", "--new-tokens", "3", "--repeats", "1", "--out", "unit_bench"])
    assert rc == 0
    out = capsys.readouterr().out
    for col in ("TTFT ms", "TPOT ms", "tokens/s", "MBU %", "bound"):
        assert col in out
    df = pd.read_csv(tmp_path / "unit_bench.csv")
    assert df["technique"].tolist() == ["fp32", "bf16"]
    assert df["model_bytes"].iloc[0] == pytest.approx(2 * df["model_bytes"].iloc[1], rel=1e-6)
    assert (df["tpot_s"] > 0).all() and (df["mbu"] > 0).all() and set(df["bound"]) <= {"memory", "compute"}
    assert df["agreement"].iloc[0] == 1.0 and {"cpu", "cores", "torch"} <= set(df.columns)
