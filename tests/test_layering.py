"""DESIGN §8: the kernel layer stays light and never imports the product layer.

``import prism_kernels`` must load none of the product layer's heavy dependencies, and no kernel
module may import a product subpackage (data, score, distributed, synth, plots, demo, integrations,
cli, __main__). Kernel modules are every module of the package outside those subpackages.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "prism_kernels"
PRODUCT = ("data", "score", "distributed", "synth", "plots", "demo", "integrations", "cli", "__main__")
HEAVY = ("pyarrow", "datasets", "transformers", "ray", "rich", "matplotlib", "faiss", "openai", "httpx",
         "openTSNE", "datasketch", "math_verify", "pandas", "scipy")


def kernel_modules() -> list[Path]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0]
        if top.removesuffix(".py") in PRODUCT:
            continue
        out.append(path)
    return out


def imported_names(path: Path) -> list[str]:
    """Absolute dotted names imported anywhere in ``path`` (relative imports resolved)."""
    module = ".".join(("prism_kernels", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names += [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    return names


def test_kernel_modules_do_not_import_the_product_layer():
    assert len(kernel_modules()) > 10
    bad = []
    for path in kernel_modules():
        for name in imported_names(path):
            parts = name.split(".")
            if len(parts) >= 2 and parts[0] == "prism_kernels" and parts[1] in PRODUCT:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "\n".join(bad)


def test_import_prism_kernels_loads_no_heavy_dependency():
    # one subprocess (importing torch is slow on a busy machine): the heavy modules, then the
    # product subpackages that `import prism_kernels` loaded
    code = ("import json, sys; import prism_kernels; mods = list(sys.modules); "
            f"print(json.dumps([sorted(m for m in mods if m.split('.')[0] in {HEAVY!r}), "
            f"sorted(m for m in mods if m.startswith('prism_kernels.') and m.split('.')[1] in {PRODUCT!r})]))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy, product = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == [], f"import prism_kernels loaded {heavy}"
    assert product == [], f"import prism_kernels loaded the product layer: {product}"
