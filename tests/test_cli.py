"""The CLI: every bad input is one line on stderr with exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sol import cli

SOL = [sys.executable, "-m", "sol.cli"]


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sol", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["profile", "--model", "nope", "--gpu", "cpu"], "unknown model 'nope'"),
        (["profile", "--model", "tiny-wan-random", "--gpu", "h100"], "tuning must run on the target hardware; this machine has: cpu"),
        (["profile", "--model", "tiny-wan-random", "--gpu", "cpu", "--workload", "nope"], "unknown workload"),
        (["profile", "--model", "sol-tiny-wan", "--layers", "2", "--gpu", "cpu"], "only applies to architecture presets"),
        (["profile", "--model", "org/not-cached", "--gpu", "cpu"], "never downloads"),
        (["generate", "--model", "tiny-wan-random", "--prompt", "x", "--out", "x.gif"], "must be an .mp4"),
        (["generate", "--model", "tiny-wan-random", "--prompt", "x", "--out", "x.mp4", "--frames", "8"], "4k+1"),
        (["generate", "--model", "tiny-wan-random", "--prompt", "x", "--out", "x.mp4", "--height", "50"], "multiple of 16"),
        (["generate", "--model", "tiny-wan-random", "--prompt", "x", "--out", "x.mp4", "--plan", "missing.json"], "does not exist"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(args, needle, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2
    assert needle in " ".join(err.split()), err
    assert "Traceback" not in err and err.strip().startswith("error:")


def test_entry_point_errors_without_traceback(tmp_path):
    p = subprocess.run(
        [*SOL, "profile", "--model", "nope", "--gpu", "cpu"], capture_output=True, text=True, cwd=tmp_path
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr and "unknown model" in p.stderr


def test_profile_prints_breakdown_and_writes_json(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p.json"
    code, stdout, _ = run_cli(
        ["profile", "--model", "tiny-wan-random", "--gpu", "cpu", "--workload", "smoke", "--out", str(out)],
        capsys,
        monkeypatch,
    )
    assert code == 0
    prof = json.loads(out.read_text())
    assert set(prof["stages"]) == {"text_encoding", "denoising", "decoding", "other"}
    assert set(prof["op_classes"]) == {"attention", "linear", "norm_elementwise", "other"}
    assert prof["op_classes"]["linear"] > 0 and "denoising" in stdout and "attention" in stdout


def test_generate_writes_mp4_and_strip(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["generate", "--model", "tiny-wan-random", "--workload", "smoke", "--steps", "2",
                            "--prompt", "a red circle moving right", "--out", "v.mp4"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    from sol.quality.video import read_mp4

    frames = read_mp4(Path("v.mp4"))
    assert frames.shape[0] == 9 and Path("v.png").stat().st_size > 0


def test_models_lists_reference_and_presets(capsys, monkeypatch):
    code, out, _ = run_cli(["models"], capsys, monkeypatch)
    assert code == 0 and "sol-tiny-wan" in out and "wan2.1-1.3b-arch" in out
