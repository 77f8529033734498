"""The README's Python quickstart runs as written (style G14)."""

import re

from _support import REPO_ROOT


def test_readme_python_blocks_run():
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README lost its Python example"
    gpu = [b for b in blocks if b.startswith("# needs a CUDA GPU")]
    assert len(gpu) <= 1, "one GPU-only example, marked on its first line"
    for code in blocks:
        if code in gpu:
            compile(code, "README.md", "exec")  # at least it parses
            continue
        scope = {}
        exec(compile(code, "README.md", "exec"), scope)
    depth, mm = scope["depth_m"], scope["depth_mm"]
    assert depth.shape == (500, 741) and mm.dtype.name == "uint16"
    assert (mm > 0).all()


def test_readme_commands_match_ci():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    for step in ("pip install -q torch==2.13.0", 'pip install -q -e ".[cpu,test,points,ros,ray,triton]"',
                 "pip install -q --no-deps nvidia-pytriton==0.7.0", "build.py --no-cuda --cuda-emulation", "pytest -q"):
        assert step in ci
        assert step.replace(" -q", "", 1) in readme or step in readme, step
