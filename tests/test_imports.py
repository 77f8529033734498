"""Dependency direction (style G1): runtime and calibration import without torch; `psdrt -h` works."""

import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch blocked by test_imports")
    sys.meta_path.insert(0, _Block())
    """
)


def _run(code):
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True)


def test_runtime_modules_import_without_torch():
    code = textwrap.dedent(
        """
        import pkgutil, importlib, psdrt.runtime, psdrt.calibration
        for pkg in (psdrt.runtime, psdrt.calibration):
            for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(m.name)
        print("ok")
        """
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_cli_help_without_torch():
    res = _run("from psdrt.runtime.cli.__main__ import main; raise SystemExit(main(['-h']))")
    assert res.returncode == 0, res.stderr
    assert "demo" in res.stdout


def test_demo_runs_without_torch(tmp_path):
    # the embedded default needs neither weights nor PyTorch: kernels + NumPy only
    res = _run(f"from psdrt.runtime.cli.__main__ import main; raise SystemExit(main(['demo', '--out', {str(tmp_path)!r}]))")
    assert res.returncode == 0, (res.returncode, res.stderr)
    assert "guided" in res.stdout and "torch" not in res.stderr


def test_bags_without_the_ros_extra_name_the_install(tmp_path):
    # runtime.bags imports without rosbags; --bag then exits 4 naming the extra
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    block = BLOCK_TORCH.replace('name == "torch" or name.startswith("torch.")',
                                'name.split(".")[0] in ("torch", "rosbags", "mcap", "mcap_ros2")')
    code = ("import psdrt.runtime.bags\nfrom psdrt.runtime.cli.__main__ import main\n"
            f"raise SystemExit(main(['run', '--bag', {str(tmp_path / 'b')!r}, '--list']))")
    res = subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True)
    assert res.returncode == 4, res.stderr
    assert "pip install 'psdrt[ros]'" in res.stderr


def test_batch_without_the_ray_extra_names_the_install(tmp_path):
    # runtime.batch imports without ray (test_runtime_modules_import_without_torch walks it too);
    # psdrt batch then exits 4 naming the extra, before reading any frame
    block = BLOCK_TORCH.replace('name == "torch" or name.startswith("torch.")', 'name.split(".")[0] in ("torch", "ray")')
    code = ("import psdrt.runtime.batch\nfrom psdrt.runtime.cli.__main__ import main\n"
            f"raise SystemExit(main(['batch', '--rgb', {str(tmp_path)!r}, '--sparse', {str(tmp_path)!r}, "
            f"'--out', {str(tmp_path / 'o')!r}]))")
    res = subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True)
    assert res.returncode == 4, res.stderr
    assert "pip install 'psdrt[ray]'" in res.stderr
    assert not (tmp_path / "o").exists()
    res = subprocess.run([sys.executable, "-c", block + "from psdrt.runtime.batch import run_batch\n"
                          f"run_batch({str(tmp_path / 'o')!r}, rgb='x', sparse='y')"], capture_output=True, text=True)
    assert res.returncode == 1 and "BackendUnavailable" in res.stderr and "pip install 'psdrt[ray]'" in res.stderr


def test_triton_without_the_extra_writes_unchecked_and_names_the_install(tmp_path):
    # runtime.triton imports without tritonclient; the repository is written (not checked) and the
    # client raises BackendUnavailable naming the extra
    block = BLOCK_TORCH.replace('name == "torch" or name.startswith("torch.")',
                                'name.split(".")[0] in ("torch", "tritonclient")')
    code = textwrap.dedent(
        f"""
        from psdrt.runtime.cli.__main__ import main
        from psdrt.runtime.errors import BackendUnavailable
        from psdrt.runtime import triton
        assert main(['build', '--triton', {str(tmp_path / 'repo')!r}, '--size', '28x42']) == 0
        try:
            triton.TritonClient('127.0.0.1:1')
        except BackendUnavailable as exc:
            print('client:', exc)
        """
    )
    res = subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "layout not checked: tritonclient is not installed (pip install 'psdrt[triton]')" in res.stdout
    assert "client:" in res.stdout and "pip install 'psdrt[triton]'" in res.stdout.split("client:")[1]
    assert (tmp_path / "repo" / "psd" / "config.pbtxt").is_file() and (tmp_path / "repo" / "psd" / "1" / "model.py").is_file()
