"""The simulator section of the benchmark: measured figures and their table."""

from __future__ import annotations

from vla_sensor.bench.sim_bench import format_sim_section, measure_sim


def test_measure_sim_quick_and_its_table(gl_ok):
    result = measure_sim(quick=True)
    assert result["episodes"] == 3 and result["episodes_per_minute"] > 0
    assert abs(sum(result["share"].values()) - 1.0) < 1e-6
    assert result["share"]["render"] > 0 and result["share"]["physics"] > 0
    assert result["expert_success_rate"] >= 2 / 3
    table = format_sim_section(result)
    assert table.startswith("### Simulator") and "episodes/min" in table and "physics" in table
