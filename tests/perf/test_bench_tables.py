"""The benchmark modules' pure parts: the config they load, the table rows they emit."""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import config_start, ike_setup  # noqa: E402
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


def test_rows_carry_errors_and_ratios() -> None:
    results = {
        "pypluto": {"rate": 200.0, "cpu_ms_per_sa": 0.5, "rss_kib_per_sa": 8.0,
                    "total": {"established": 10000, "rss_kib_per_sa": 9.0},
                    "hold": {"before": 10000, "deaths": 0, "idle_cpu_pct": 2.0}},
        "strongswan": {"rate": 100.0, "cpu_ms_per_sa": 0.6},
        "libreswan": {"error": "LabError: pluto died"},
    }
    rows = {r["metric"]: r for r in ike_setup.rows(results, 1000, 16, 10000, 10000, 30, 30)}
    assert rows["setup rate ratio pypluto/strongSwan, childless"]["pypluto"] == 2.0
    assert "goal >= 1.0: met" in rows["setup rate ratio pypluto/strongSwan, childless"]["note"]
    assert "libreswan: LabError: pluto died" in rows["setup rate, childless"]["note"]
    cpu = rows["responder CPU per IKE SA, childless"]
    assert (cpu["pypluto"], cpu["strongswan"], cpu["libreswan"]) == (0.5, 0.6, None)
    assert "goal <= C daemons: met" in cpu["note"]
    assert "not measured" in rows["setup rate ratio pypluto/strongSwan, IKE+Child"]["note"]
