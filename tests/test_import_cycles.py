"""No import cycle among the project's own modules, imports inside functions included.

A function-level import only postpones a cycle: the two modules still need each other, and whichever is
imported first may see the other half-initialised. The graph is read from the source with ``ast``: every
``import`` and ``from ... import`` anywhere in a file, relative imports resolved, ``from pkg import name``
counted as an import of the submodule ``pkg.name`` when there is one, and a bare name in a script resolved
to the script beside it (``python scripts/x.py`` puts scripts/ first on sys.path).
"""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('archs', 'ops', 'scripts')   # with the top-level .py files (main, test_models, predict, opts)
SCRIPT_PACKAGES = ('scripts',)           # files run as scripts: their bare imports name their neighbours


def project_modules(root, packages=PACKAGES):
    """{module name: file path} of the top-level .py files of ``root`` and of ``packages`` (recursively)."""
    modules = {name[:-3]: os.path.join(root, name) for name in os.listdir(root) if name.endswith('.py')}
    for package in packages:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != '__pycache__')
            prefix = os.path.relpath(folder, root).replace(os.sep, '.')
            for name in files:
                if name.endswith('.py'):
                    modules[prefix if name == '__init__.py' else f'{prefix}.{name[:-3]}'] = os.path.join(folder, name)
    return modules


def _resolve(name, modules):
    """The project module an imported dotted name loads (its longest known prefix), or None."""
    while name and name not in modules:
        name = name.rpartition('.')[0]
    return name or None


def imports_of(module, path, modules, script_packages=SCRIPT_PACKAGES):
    """{project module: first line importing it} for every import statement of the file at ``path``."""
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    found = {}
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')[:len(package.split('.')) - (node.level - 1)]
                base = '.'.join(parts + ([base] if base else []))
            # `from pkg import sub` loads the submodule pkg.sub; `from pkg import name` runs pkg itself
            names = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            if package in script_packages and f'{package}.{name}' in modules:
                name = f'{package}.{name}'
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


def import_graph(root, packages=PACKAGES, script_packages=SCRIPT_PACKAGES):
    """{module: {imported project module: line}} of the project under ``root``."""
    modules = project_modules(root, packages)
    return {m: imports_of(m, path, modules, script_packages) for m, path in sorted(modules.items())}


def find_cycle(graph):
    """One import cycle as [m0, m1, ..., m0] (each module imports the next), or None."""
    state, stack = {}, []          # state: 1 while on the depth-first path, 2 when done

    def visit(module):
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def describe(cycle, graph):
    return ' -> '.join([cycle[0]] + [f'{b} (line {graph[a][b]} of {a})' for a, b in zip(cycle, cycle[1:])])


def test_the_project_has_no_import_cycle():
    graph = import_graph(REPO)
    assert {'main', 'opts', 'archs', 'ops.checkpoint', 'scripts.benchmark'} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f'import cycle: {describe(cycle, graph)}'


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path):
    _write(tmp_path, {'pkg/__init__.py': '', 'pkg/a.py': 'from pkg import b\n',
                      'pkg/b.py': 'import os\n\n\ndef f():\n    from . import a\n    return a\n'})
    graph = import_graph(str(tmp_path), packages=('pkg',))
    assert graph['pkg.b'] == {'pkg.a': 5}
    assert find_cycle(graph) == ['pkg.a', 'pkg.b', 'pkg.a']
    assert describe(find_cycle(graph), graph) == 'pkg.a -> pkg.b (line 1 of pkg.a) -> pkg.a (line 5 of pkg.b)'

    (tmp_path / 'pkg' / 'b.py').write_text('def f():\n    from .. import os\n')     # not one of ours
    assert find_cycle(import_graph(str(tmp_path), packages=('pkg',))) is None


def test_a_script_loading_its_neighbour_by_bare_name_is_a_cycle(tmp_path):
    # the shape scripts/vs_reference.py had: benchmark.py imports it, it imports `benchmark` back
    _write(tmp_path, {'tools/bench.py': 'from tools import helper\n',
                      'tools/helper.py': 'def run():\n    from bench import emit\n'})
    graph = import_graph(str(tmp_path), packages=('tools',), script_packages=('tools',))
    assert find_cycle(graph) == ['tools.bench', 'tools.helper', 'tools.bench']
    assert find_cycle(import_graph(str(tmp_path), packages=('tools',), script_packages=())) is None
