"""Tests for fault scenarios: shipped YAML, resolving targets, bad files, the published mix."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import vigil.sim
from vigil.diagnosis.library import FaultLibrary
from vigil.sim.cluster import SimCluster
from vigil.sim.effects import effect_for, target_kind
from vigil.sim.scenario import (
    PUBLISHED_MIX,
    FaultStep,
    PlannedFault,
    ScenarioError,
    ScenarioSpec,
    draw_scenarios,
    load_scenario,
    resolve,
    shipped_scenarios,
    sweep_scenarios,
)
from vigil.sim.topology import ClusterSpec, SimTopology, build_topology
from vigil.sim.truth import LAYERS

DATA = Path(__file__).parent / "data" / "scenarios"
SHIPPED = Path(vigil.sim.__file__).parent / "scenarios"
SPEC = ClusterSpec(racks=2, nodes_per_rack=4, nodes_per_group=4, jobs=2)


@pytest.fixture(scope="module")
def topo() -> SimTopology:
    return build_topology(SPEC)


def _spec(*steps: tuple[str, str]) -> ScenarioSpec:
    return ScenarioSpec(name="probe",
                        faults=[FaultStep(fault=f, target=t) for f, t in steps])


def _rng(seed: int = 3) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- shipped scenarios --------------------------------------------------------------------


def test_shipped_scenarios_cover_every_layer(library: FaultLibrary) -> None:
    specs = shipped_scenarios()

    # One scenario per file, named after it, read in file-name order.
    files = sorted(SHIPPED.glob("*.yaml"), key=lambda p: p.name)
    assert [s.name for s in specs] == [p.stem for p in files]
    layers = {library.get(f.fault).layer for s in specs for f in s.faults}
    assert layers == set(LAYERS)
    assert len(LAYERS) == 8


def test_shipped_scenarios_play_on_a_cluster(library: FaultLibrary, tmp_path: Path) -> None:
    cluster = SimCluster(library, tmp_path, spec=SPEC, now=0.0)
    for spec in shipped_scenarios():
        scenario = resolve(spec, library, cluster.topo, _rng())
        for planned in scenario.faults:
            injection = cluster.inject(planned.fault, planned.target, 10.0,
                                       planned.duration_s, scenario.name)
            assert injection.truth is not None
            assert injection.truth.root_entity == planned.target
        cluster.step(10.0 + scenario.length_s)
        cluster.heal_all(10.0 + scenario.length_s)


def test_a_scenario_file_loads_with_its_defaults() -> None:
    spec = load_scenario(DATA / "two_faults.yaml")

    assert spec.name == "two-faults"
    assert [(f.fault, f.target, f.at_s, f.duration_s) for f in spec.faults] == [
        ("gpu.thermal_throttle", "gpu:*", 0.0, 60.0),
        ("net.ib.link_down", "nic:gpu-a-002/mlx5_1", 30.0, 45.0),
    ]


# --- resolve ------------------------------------------------------------------------------


def test_resolve_keeps_fixed_targets_and_picks_wildcards_of_the_right_kind(
    library: FaultLibrary, topo: SimTopology
) -> None:
    scenario = resolve(load_scenario(DATA / "two_faults.yaml"), library, topo, _rng())

    assert scenario.name == "two-faults"
    hot, port = scenario.faults
    assert hot.target in [e for e in topo.entities() if e.startswith("gpu:")]
    assert port == PlannedFault("net.ib.link_down", "nic:gpu-a-002/mlx5_1", 30.0, 45.0)
    assert scenario.length_s == 75.0


@pytest.mark.parametrize("fault", ["gpu.xid.79", "net.ib.link_down", "net.ib.port_errors",
                                   "storage.slow_io", "job.cuda_oom", "host.oom_kill"])
def test_wildcard_targets_are_drawn_from_the_seed(
    library: FaultLibrary, topo: SimTopology, fault: str
) -> None:
    kind = target_kind(library.get(fault))
    spec = _spec((fault, f"{kind}:*"))

    picks = [resolve(spec, library, topo, _rng(seed)).faults[0].target for seed in range(30)]

    assert picks == [resolve(spec, library, topo, _rng(seed)).faults[0].target
                     for seed in range(30)]
    kinds = [e for e in topo.entities() if e.startswith(f"{kind}:")]
    assert set(picks) <= set(kinds)
    assert len(set(picks)) > 1  # not always the first of its kind


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (("gpu.xid.999", "gpu:*"), "unknown fault 'gpu.xid.999'"),
        (("sched.slurm.node_down", "node:*"), "the simulator cannot play 'sched.slurm.node_down'"),
        (("gpu.xid.79", "node:*"), "gpu.xid.79 is injected at a gpu, not node:*"),
        (("gpu.xid.79", "gpu:gpu-z-001/0"), "no entity 'gpu:gpu-z-001/0' in this cluster"),
        (("gpu.xid.79", "node:gpu-a-001"), "gpu.xid.79 is injected at a gpu, not node:gpu-a-001"),
        (("net.ib.port_errors", "nic:gpu-a-001/mlx5_0"),
         "net.ib.port_errors is injected at a switch, not nic:gpu-a-001/mlx5_0"),
    ],
)
def test_a_bad_step_names_the_scenario_and_the_step(
    library: FaultLibrary, topo: SimTopology, step: tuple[str, str], problem: str
) -> None:
    spec = _spec(("gpu.xid.79", "gpu:*"), step)

    with pytest.raises(ScenarioError) as raised:
        resolve(spec, library, topo, _rng())

    assert str(raised.value) == f"scenario 'probe', faults.1: {problem}"


# --- bad files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("not_yaml.yaml", "not valid YAML: "),
        ("unknown_key.yaml", "faults.0.severity: Extra inputs are not permitted"),
        ("no_faults.yaml", "faults: List should have at least 1 item"),
        ("bad_name.yaml", "name: String should match pattern"),
        ("negative_time.yaml", "faults.0.at_s: Input should be greater than or equal to 0; "
                               "faults.0.duration_s: Input should be greater than 0"),
        ("empty.yaml", "Input should be a valid dictionary"),
        ("missing.yaml", "cannot read: No such file or directory"),
    ],
)
def test_a_bad_file_is_named_with_what_is_wrong(name: str, problem: str) -> None:
    path = DATA / "bad" / name

    with pytest.raises(ScenarioError) as raised:
        load_scenario(path)

    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_every_bad_file_has_a_case() -> None:
    cases = {"not_yaml.yaml", "unknown_key.yaml", "no_faults.yaml", "bad_name.yaml",
             "negative_time.yaml", "empty.yaml"}

    assert {p.name for p in (DATA / "bad").iterdir()} == cases


# --- the published mix --------------------------------------------------------------------


def test_every_fault_of_the_mix_can_be_played(library: FaultLibrary) -> None:
    for category, weight, faults in PUBLISHED_MIX:
        assert weight > 0, category
        for fault in faults:
            assert fault in library, (category, fault)
            assert effect_for(library.get(fault)) is not None, (category, fault)


def test_draws_follow_the_published_mix(library: FaultLibrary, topo: SimTopology) -> None:
    draws = 2000
    scenarios = draw_scenarios(library, topo, draws, seed=11, duration_s=45.0)

    total = sum(w for _, w, _ in PUBLISHED_MIX)
    expected: Counter[str] = Counter()
    for _, weight, faults in PUBLISHED_MIX:
        for fault in faults:
            expected[fault] += weight / total / len(faults)
    seen = Counter(s.faults[0].fault for s in scenarios)
    assert set(seen) == set(expected)
    for fault, share in expected.items():
        # 4 standard deviations of a binomial share: loose enough for any seed, tight enough
        # that dropping or doubling a category fails.
        sigma = (share * (1 - share) / draws) ** 0.5
        assert abs(seen[fault] / draws - share) < 4 * sigma + 0.002, fault
    kinds = Counter(s.faults[0].target.split(":")[0] for s in scenarios)
    assert kinds.most_common(1)[0][0] == "gpu"
    assert 0.54 < kinds["gpu"] / draws < 0.63  # 57.3 of 97.9 published points


def test_draws_are_single_faults_of_the_right_kind(
    library: FaultLibrary, topo: SimTopology
) -> None:
    scenarios = draw_scenarios(library, topo, 50, seed=2, duration_s=45.0)

    assert [s.name for s in scenarios][:2] == [f"mix-001-{scenarios[0].faults[0].fault}",
                                               f"mix-002-{scenarios[1].faults[0].fault}"]
    for scenario in scenarios:
        (planned,) = scenario.faults
        kind = target_kind(library.get(planned.fault))
        assert planned.target.startswith(f"{kind}:")
        assert planned.target in topo.entities()
        assert (planned.at_s, planned.duration_s) == (0.0, 45.0)


def test_draws_are_deterministic_for_a_seed(library: FaultLibrary, topo: SimTopology) -> None:
    first = draw_scenarios(library, topo, 200, seed=5)

    assert draw_scenarios(library, topo, 200, seed=5) == first
    assert draw_scenarios(library, topo, 200, seed=6) != first


def test_a_sweep_plays_every_playable_mode_once_without_overlap(library: FaultLibrary) -> None:
    topo = build_topology(ClusterSpec(racks=2, nodes_per_rack=8, jobs=4, seed=3))
    scenarios = sweep_scenarios(library, topo, seed=3)
    played = Counter(f.fault for s in scenarios for f in s.faults)
    assert played == Counter(m.id for m in library if effect_for(m) is not None)
    entities = set(topo.entities())
    job_of = {node: job.id for job in topo.jobs for node in job.nodes}
    for scenario in scenarios:
        kinds = {target_kind(library.get(f.fault)) for f in scenario.faults}
        if kinds & {"switch", "storage"}:
            assert len(scenario.faults) == 1  # they reach many jobs: alone
            continue
        jobs = [f.target if f.target.startswith("job:")
                else job_of[f.target.partition(":")[2].split("/")[0]] for f in scenario.faults]
        assert len(jobs) == len(set(jobs)) <= 4
        for fault in scenario.faults:
            assert fault.target in entities
            assert fault.target.startswith(f"{target_kind(library.get(fault.fault))}:")
