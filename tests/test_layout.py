"""The sandbox stays small enough to read: trm.py and the README within their lengths, the README's
first how-to on its first screen, no function in impl/ over 100 lines, no import cycle in impl/,
and no script importing another."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPL = ROOT / "impl"
SCRIPTS = {"train_trm", "train_trm_jepa", "evaluate", "solve", "ttc", "study", "bench", "compare_jepa"}


def impl_imports() -> dict[str, set[str]]:
    """Every impl module -> the impl modules it imports, at any level (module, function, class)."""
    names = {p.stem for p in IMPL.glob("*.py")}
    graph = {}
    for path in IMPL.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        graph[path.stem] = (found & names) - {path.stem}
    return graph


def test_trm_py_and_the_readme_stay_short():
    assert len((IMPL / "trm.py").read_text().splitlines()) <= 450
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 400
    headings = [i for i, line in enumerate(readme, 1) if line.startswith("## ")]
    assert headings and headings[0] <= 60 and "start" in readme[headings[0] - 1].lower()


def test_no_function_in_impl_is_over_100_lines():
    long = [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in IMPL.glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100]
    assert long == []


def in_cycles(graph: dict[str, set[str]]) -> list[str]:
    """The modules from which an import chain leads back to themselves."""
    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == target:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    return sorted(m for m in graph if reaches(m, m))


def test_impl_has_no_import_cycle_and_no_script_imports_a_script():
    graph = impl_imports()
    assert "trm" in graph["arch"] and "puzzle_dataset" in graph["puzzles"]   # the graph holds real imports
    assert in_cycles(graph) == []
    assert {m: sorted(d & SCRIPTS) for m, d in graph.items() if d & SCRIPTS} == {}
    assert in_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c"]  # the check sees one
