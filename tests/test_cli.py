"""The README's main command: `stgkern demo` on the built-in synthetic log."""
import json
import subprocess
import sys

import pytest

from stgkern import cli


def test_demo_synthetic_json(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert cli.main(["demo", "--users", "150", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["events"] > 0 and s["graph"]["edges"] > 0
    g = s["graph"]
    assert g["edges_temporal_only"] + g["edges_category_only"] + g["edges_both"] == g["edges"]
    assert s["node_features"][0] == s["events"]
    assert set(s["seconds_per_stage"]) == {"load", "k-core filter", "window graph", "node features", "edge features"}
    printed = capsys.readouterr().out
    assert "edges" in printed and "time per stage" in printed


def test_demo_real_taobao(shared_data, tmp_path):
    path = shared_data / "taobao_userbehavior" / "UserBehavior_sample.csv"
    out = tmp_path / "t.json"
    assert cli.main(["demo", "--data", str(path), "--format", "taobao", "--k-core", "1", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["events_loaded"] == 84475 and s["events"] == 84475 and s["users"] == 815


def test_demo_rejects_data_without_format():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--data", "x.csv"])


def test_console_script_info_runs():
    r = subprocess.run([sys.executable, "-m", "stgkern.cli", "info"], capture_output=True, text=True, check=True)
    assert "numba" in r.stdout and "cuda" in r.stdout
