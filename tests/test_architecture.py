"""The package's shape: no import cycle anywhere, and no config key that no code reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from omegaconf import OmegaConf

from tests.training.helpers import compose_cfg

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vla_sensor"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or inside functions."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 40 and graph["vla_sensor.data.compat"] >= {"vla_sensor.data.dataset"}
    assert cycles(graph) == []


# Schema modules declare keys; a key counts as read where other code names it.
SCHEMA_FILES = {"config.py", "model_config.py", "encoder_config.py"}
NOT_CODE_KEYS = ("model.backbone.arch",)  # Qwen's own config keyword arguments, passed through whole


def _source_text() -> str:
    files = [p for p in PACKAGE.rglob("*.py") if p.name not in SCHEMA_FILES]
    files += [REPO / name for name in ("train.py", "evaluate.py", "benchmark.py", "serve.py")]
    return "\n".join(p.read_text() for p in files)


def unread_keys(cfg, source: str) -> list[str]:
    container = OmegaConf.to_container(cfg, resolve=False)
    missing = []

    def walk(node, path: tuple[str, ...]) -> None:
        for key, value in node.items():
            full = ".".join((*path, key))
            if full.startswith(NOT_CODE_KEYS):
                continue
            pattern = rf"(\.{re.escape(key)}\b|[\"']{re.escape(key)}[\"']|\b{re.escape(key)}\s*[:=])"
            if key != "_target_" and not re.search(pattern, source):
                missing.append(full)
            if isinstance(value, dict):
                walk(value, (*path, key))

    walk(container, ())
    return missing


def test_the_unread_key_finder_finds_one() -> None:
    cfg = compose_cfg([])
    cfg_with_orphan = OmegaConf.merge(OmegaConf.to_container(cfg), {"data": {"prefetch_depth_zq": 3}})
    assert unread_keys(cfg_with_orphan, _source_text()) == ["data.prefetch_depth_zq"]


def test_every_config_key_is_read_by_some_code() -> None:
    source = _source_text()
    for overrides in ([], ["model=qwen2_5_vl_3b"], ["trainer/stage=stage2_lora"]):
        assert unread_keys(compose_cfg(overrides), source) == [], overrides


def test_every_evaluate_and_serve_key_is_read_by_some_code() -> None:
    from vla_sensor.eval.config import EvalConfig
    from vla_sensor.serving.config import ServeConfig

    source = _source_text()
    for schema in (EvalConfig, ServeConfig):
        assert unread_keys(OmegaConf.structured(schema), source) == [], schema.__name__
