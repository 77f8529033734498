"""ViT-L encoder export at NYU and KITTI sizes: ORT CPU FP32 vs PyTorch (random weights).

Too heavy for the test suite (about 13 GB of memory and minutes per size on 2 cores), so it lives
here. Usage: python benchmarks/bm_export_vitl.py 392x518 392x1862 > benchmarks/results/export_vitl_cpu.json
Errors are max|ort - torch| / max|torch| per output.
"""
import gc
import json
import sys
import tempfile
import time

import numpy as np
import torch

torch.set_num_threads(2)
from psdrt.export.models.depth_anything_v2 import DepthAnythingV2
from psdrt.export.onnx_export import export_encoder
from psdrt.runtime.backends.ort import OrtBackend
torch.manual_seed(0)
m = DepthAnythingV2('vitl').eval()
with torch.no_grad():  # random weights end in an all-zero ReLU output: lift the last bias
    m.depth_head.scratch.output_conv2[2].bias.fill_(0.5)
res = {}
for size in [tuple(map(int, s.split('x'))) for s in sys.argv[1:]]:
    x = torch.randn(1, 3, *size)
    t = time.time(); path = export_encoder(m, f'{tempfile.gettempdir()}/psdrt_vitl_{size[0]}x{size[1]}.onnx', size=size, simplify=False); te = time.time() - t
    with torch.no_grad():
        rel, feats = m(x)
    ref = {'rel_inv': rel, **{f'feat{i}': f for i, f in enumerate(feats)}}
    t = time.time(); be = OrtBackend(str(path), providers=['cpu'], threads=2); out = be.run({'rgb': x.numpy()}); tr = time.time() - t
    errs = {k: float(np.abs(out[k] - ref[k].numpy()).max() / np.abs(ref[k].numpy()).max()) for k in ref}
    res[f'{size[0]}x{size[1]}'] = {'export_s': te, 'ort_load_run_s': tr, 'max_rel_err': errs, 'rel_inv_range': [float(rel.min()), float(rel.max())]}
    be.close()
    del be, out
    gc.collect()
print(json.dumps(res, indent=1))
