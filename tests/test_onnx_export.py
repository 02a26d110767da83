"""ONNX export: `python -m monai.bundle onnx_export` of the bundle's network, checked against eager PyTorch.

The exported graph is what a non-PyTorch runtime (onnxruntime, TensorRT, Triton) serves, so its outputs must match
the network the bundle trained, for any batch size (the batch axis is exported as dynamic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from monai.bundle import ConfigParser

from bundle.networks.multihead import MultiHeadNet
from conftest import ROOT, TINY_NETWORK, bundle_command

# The converter options the README's export command uses: the TorchScript-based exporter (``dynamo`` False needs no
# onnxscript), named input/output as in metadata.json, and a dynamic batch axis.
ONNX_CONVERTER_KWARGS = (
    "{'dynamo': False, 'input_names': ['image'], 'output_names': ['pred'], "
    "'dynamic_axes': {'image': {0: 'batch'}, 'pred': {0: 'batch'}}}"
)


def test_onnx_export_matches_eager_network_in_onnxruntime(tmp_path: Path) -> None:
    tasks = ConfigParser.load_config_file(ROOT / "configs" / "common.yaml")["tasks"]
    torch.manual_seed(0)
    eager = MultiHeadNet(TINY_NETWORK[1], tasks, in_channels=3).eval()
    checkpoint, exported = tmp_path / "model.pt", tmp_path / "model.onnx"
    torch.save(eager.state_dict(), checkpoint)

    bundle_command(
        "onnx_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(checkpoint),
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml", *TINY_NETWORK,
        "--use_trace", "True", "--input_shape", "[1, 3, 64, 64]", "--converter_kwargs", ONNX_CONVERTER_KWARGS,
    )  # fmt: skip

    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["pred"]
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    image = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    (onnx_pred,) = session.run(["pred"], {"image": image.numpy()})
    with torch.no_grad():
        eager_pred = eager(image).numpy()
    assert onnx_pred.shape == (3, 6)
    np.testing.assert_allclose(onnx_pred, eager_pred, atol=1e-4, rtol=1e-4)
