"""MultiMixNet: the saliency bridge is the input gradient of the top class score, detached, in every mode."""

from __future__ import annotations

import pytest
import torch

from bundle.networks.multimix import CLASS_LOGITS, MASK_LOGITS, SALIENCY, MultiMixNet, MultiMixOutput

TINY = (4, 8, 16)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def top_score_gradient(net: MultiMixNet, image: torch.Tensor) -> torch.Tensor:
    """The reference: autograd gradient of each image's largest class logit with respect to that image."""
    source = image.clone().requires_grad_(True)
    logits = net.classify(net.encode(source)[-1])
    return torch.autograd.grad(logits.max(dim=1).values.sum(), source)[0]


def test_outputs_and_shapes() -> None:
    net = MultiMixNet(in_channels=1, num_classes=3, out_channels=2, channels=TINY).eval()
    output = net(torch.rand(2, 1, 32, 40))
    assert output[CLASS_LOGITS].shape == (2, 3)
    assert output[MASK_LOGITS].shape == (2, 2, 32, 40)
    assert output[SALIENCY].shape == (2, 1, 32, 40)


def test_saliency_equals_the_input_gradient_of_the_top_class_score() -> None:
    net = MultiMixNet(channels=TINY).eval()
    image = torch.rand(3, 1, 32, 32)
    saliency = net(image)[SALIENCY]
    expected = top_score_gradient(net, image)
    assert expected.abs().max() > 0
    torch.testing.assert_close(saliency, expected)
    # per image: the gradient of one image's score does not depend on the other images of the batch
    torch.testing.assert_close(net(image[1:2])[SALIENCY], expected[1:2])


def test_saliency_is_detached_and_the_decoder_sends_no_gradient_into_the_classifier() -> None:
    net = MultiMixNet(channels=TINY).train()
    output = net(torch.rand(2, 1, 32, 32))
    assert not output[SALIENCY].requires_grad
    output[MASK_LOGITS].square().mean().backward()
    assert net.classifier.weight.grad is None and net.classifier.bias.grad is None
    assert net.encoder[0].conv_0.conv.weight.grad.abs().sum() > 0  # the shared encoder does learn from the masks
    net.zero_grad()
    net(torch.rand(2, 1, 32, 32))[CLASS_LOGITS].sum().backward()
    assert net.classifier.weight.grad.abs().sum() > 0


def test_the_bridge_feeds_the_decoder() -> None:
    net = MultiMixNet(channels=TINY).eval()
    image = torch.rand(2, 1, 32, 32)
    output = net(image)
    features = net.encode(image)
    without = net.decode(features, torch.cat([image, torch.zeros_like(image)], dim=1))
    assert not torch.allclose(output[MASK_LOGITS], without)


def test_inference_under_no_grad_keeps_gradients_only_inside_the_bridge() -> None:
    net = MultiMixNet(channels=TINY).eval()
    image = torch.rand(2, 1, 32, 32)
    with_graph = net(image)
    with torch.no_grad():
        output = net(image)
    assert not any(value.requires_grad for value in output.values())
    assert all(p.grad is None for p in net.parameters())
    for key in (CLASS_LOGITS, MASK_LOGITS, SALIENCY):
        torch.testing.assert_close(output[key], with_graph[key].detach())


def test_without_bridge_there_is_no_saliency_and_the_decoder_is_a_plain_unet() -> None:
    net = MultiMixNet(channels=TINY, bridge=False)
    with torch.no_grad():
        output = net(torch.rand(1, 1, 32, 32))
    assert set(output) == {CLASS_LOGITS, MASK_LOGITS}
    assert net.decoder[0].convs.conv_0.conv.in_channels == 8 + 8  # skip + upsampled, no bridge channels


def test_dimension_agnostic() -> None:
    net = MultiMixNet(spatial_dims=3, channels=(2, 4)).eval()
    output = net(torch.rand(1, 1, 8, 8, 8))
    assert output[MASK_LOGITS].shape == (1, 1, 8, 8, 8) and output[SALIENCY].shape == (1, 1, 8, 8, 8)


def test_export_wrapper_returns_one_tensor() -> None:
    net = MultiMixNet(channels=TINY).eval()
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert MultiMixOutput(net)(image).shape == (1, 1, 32, 32)
        assert MultiMixOutput(net, CLASS_LOGITS)(image).shape == (1, 2)
    with pytest.raises(ValueError):
        MultiMixOutput(net, "saliency")
