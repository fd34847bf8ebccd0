"""Tests for the simulator's cost measure on a small cluster (figures only; no time asserted)."""

from __future__ import annotations

import pytest
from vigil.sim.cost import SimCost, measure
from vigil.sim.topology import ClusterSpec


@pytest.fixture(scope="module")
def cost() -> SimCost:
    # A short interval keeps the share of a core well clear of rounding to zero.
    return measure(ClusterSpec(racks=1, nodes_per_rack=2), steps=2, interval_s=1.0)


def test_the_figures_describe_the_cluster_and_are_positive(cost: SimCost) -> None:
    assert (cost.nodes, cost.gpus, cost.steps, cost.interval_s) == (2, 16, 2, 1.0)
    for name, value in cost.flat().items():
        assert value > 0, name


def test_per_node_and_per_core_figures_follow_from_the_step_figures(cost: SimCost) -> None:
    per_step_ms = cost.step_cpu_ms + cost.render_cpu_ms

    # Each figure is rounded on its own, hence the absolute tolerances.
    assert cost.cpu_ms_per_node_per_step == pytest.approx(per_step_ms / 2, abs=0.01)
    assert cost.cpu_share_of_one_core == pytest.approx(per_step_ms / 1000 / 1.0, abs=1e-4)


def test_the_exposition_size_is_what_two_nodes_serve(cost: SimCost) -> None:
    # dcgm-exporter (14 families x 8 GPUs), node-exporter and the trainer: tens of kB a node.
    assert 0.02 <= cost.exposition_mb <= 0.2


def test_flat_keys_are_stable(cost: SimCost) -> None:
    assert list(cost.flat()) == [
        "nodes", "gpus", "steps", "interval_s", "build_cpu_s", "step_cpu_ms", "render_cpu_ms",
        "exposition_mb", "cpu_ms_per_node_per_step", "cpu_share_of_one_core",
    ]
