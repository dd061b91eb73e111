"""The benchmark modules' pure parts: the config they load, the table rows they emit."""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

from bench import config_start, crypto_floor, ike_setup, run  # noqa: E402
from pypluto.config.parser import load_config  # noqa: E402


def test_config_start_file_is_valid_for_our_parser(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ipsec.conf"
    path.write_text(config_start.make_config(40))
    cfg = load_config(str(path))
    assert cfg.ok, [str(d) for d in cfg.file_errors][:3]
    peers = [n for n in cfg.conns if n.startswith("peer")]
    assert len(peers) == 40


def test_log_span_reads_pluto_timestamps(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "pluto.log"
    log.write_text("Nov 28 23:59:59.500000: Starting Pluto (pypluto)\n"
                   'Nov 29 00:00:01.000000: "peer9": added IKEv2 connection\n')
    assert config_start._log_span(log, "Starting Pluto", '"peer9": added') == 1.5
    assert config_start._log_span(log, "Starting Pluto", "never logged") is None


def test_goal_wording() -> None:
    assert ike_setup.goal(0.4, 0.5) == "met"
    assert ike_setup.goal(0.6, 0.5) == "missed"
    assert ike_setup.goal(None, 0.5) == "not measured"


def _run(kind: str, rate: float, cpu: float, logged: int, gen: int) -> dict:
    return {"rate": rate, "cpu_ms_per_sa": cpu, "rss_kib_per_sa": 8.0, "sys_ms_per_sa": 0.1,
            "established_logged": logged, "established_generator": gen}


def test_rows_are_medians_and_report_short_log_counts() -> None:
    results = {
        "pypluto": [_run("pypluto", 100.0, 0.5, 1000, 1000), _run("pypluto", 300.0, 0.7, 64,
                                                                   1000)],
        "strongswan": [_run("s", 200.0, 0.6, 1000, 1000), _run("s", 200.0, 0.6, 1000, 1000)],
        "libreswan": [{"error": "LabError: pluto died"}, _run("l", 50.0, 0.3, 1000, 1000)],
    }
    rows = {r["metric"]: r for r in ike_setup.rows(results, 1000, 32)}
    rate = rows["setup rate, childless"]
    assert (rate["pypluto"], rate["strongswan"], rate["libreswan"]) == (200.0, 200.0, 50.0)
    assert "SHORT COUNTS: pypluto logged 64 of 1000 (generator saw 1000)" in rate["note"]
    assert "libreswan: LabError: pluto died" in rate["note"]
    cpu = rows["responder CPU per IKE SA, childless"]
    assert cpu["pypluto"] == 0.6
    assert "goal <= 0.4 ms: not measured (pypluto's log count is short" in cpu["note"]
    assert rows["setup rate, IKE+Child"]["pypluto"] is None
    results["pypluto"][1]["established_logged"] = 1000
    cpu = {r["metric"]: r for r in ike_setup.rows(results, 1000, 32)}[
        "responder CPU per IKE SA, childless"]
    assert "goal <= 0.4 ms: missed" in cpu["note"]


def test_log_counter_reads_increments_and_waits_for_whole_lines(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "pluto.log"
    log.write_bytes(b'"resp"[1] #1: established IKE SA; authenticated peer\n"resp"[2] #2: est')
    c = ike_setup.LogCounter(log, ike_setup.ESTABLISHED["pypluto"])
    assert c.poll() == 1
    with open(log, "ab") as f:
        f.write(b"ablished IKE SA; authenticated peer\nnoise\n")
    assert c.poll() == 2
    assert c.poll() == 2
    ss = ike_setup.LogCounter(log, ike_setup.ESTABLISHED["strongswan"])
    log.write_bytes(b"IKE_SA resp[7] established between 192.0.2.2[a]...192.0.2.1[b]\n")
    assert ss.poll() == 1


def test_prf_plus_follows_rfc7296_2_13() -> None:
    k, s = b"k" * 32, b"seed"
    t1 = crypto_floor.prf(k, s + b"\x01")
    t2 = crypto_floor.prf(k, t1 + s + b"\x02")
    assert crypto_floor.prf_plus(k, s, 40) == (t1 + t2)[:40]


def test_floor_parts_are_all_measured() -> None:
    parts = crypto_floor.measure(5)
    assert set(parts) == {"x25519", "prf+", "aes-gcm", "hmac-auth", "total"}
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))


def _result(module: str, commit: str, value: float) -> dict:
    return {"module": module, "name": module.split(".")[-1], "commit": commit,
            "command": "make bench", "run_started": "x", "loadavg_at_start": 1.0,
            "run_loadavg_at_end": 2.0,
            "rows": [{"metric": "m", "pypluto": value, "unit": "s", "note": ""}]}


def test_summary_never_shows_results_of_another_commit(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_result("bench.config_load", "new", 1.5)))
    (tmp_path / "b.json").write_text(json.dumps(_result("bench.esp_daemons", "old", 9.75)))
    text = run.summary("new", run.load_results(tmp_path), "new")
    assert "| config_load | m | 1.5 |" in text
    assert "9.75" not in text
    assert "Not shown (from another commit, stale): esp_daemons (old" in text
    assert "DIRTY" not in text
    assert "DIRTY TREE" in run.summary("new-dirty", run.load_results(tmp_path), "new-dirty")


def test_summary_names_the_machine_and_warns_when_two_are_mixed(tmp_path: pathlib.Path
                                                                ) -> None:
    here = run.machine()
    assert here["cpus"] == os.cpu_count() and here["python"] == sys.version.split()[0]
    a = _result("bench.config_load", "new", 1.5)
    a["machine"] = {"cpu": "AMD EPYC", "cpus": 2, "kernel": "6.18", "python": "3.11.7"}
    (tmp_path / "a.json").write_text(json.dumps(a))
    text = run.summary("new", run.load_results(tmp_path), "new")
    assert "measured on AMD EPYC, 2 CPUs, kernel 6.18, Python 3.11.7;" in text
    assert "more than one machine" not in text
    b = _result("bench.esp_daemons", "new", 9.75)
    b["machine"] = dict(a["machine"], cpu="Intel Xeon")
    (tmp_path / "b.json").write_text(json.dumps(b))
    text = run.summary("new", run.load_results(tmp_path), "new")
    assert "AMD EPYC, 2 CPUs" in text and "Intel Xeon, 2 CPUs" in text
    assert "more than one machine" in text


def test_floor_ratio_row_uses_the_same_commit() -> None:
    saved = {"bench.crypto_floor": {"commit": "c", "results": {"total": 200.0}},
             "bench.ike_setup": {"commit": "c", "rows": [
                 {"metric": "responder CPU per IKE SA, childless", "pypluto": 0.6,
                  "strongswan": 0.5, "libreswan": None}]}}
    row = run.floor_ratio(saved)
    assert row is not None and (row["pypluto"], row["strongswan"]) == (3.0, 2.5)
    saved["bench.crypto_floor"]["commit"] = "other"
    assert run.floor_ratio(saved) is None


def test_a_dirty_tree_is_refused_unless_allowed(tmp_path: pathlib.Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def git(*a: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x")
    head, dirty = run.git_commit(tmp_path)
    assert len(head) == 40 and not dirty
    (tmp_path / "f").write_text("2")
    monkeypatch.setattr(run, "REPO", tmp_path)
    assert run.git_commit(tmp_path)[1]
    monkeypatch.setattr(run, "git_commit", lambda repo=tmp_path: (head, True))
    with pytest.raises(run.DirtyTree):
        run.provenance(False)
    assert run.provenance(True) == head + "-dirty"
