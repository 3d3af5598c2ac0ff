import pytest
import torch

from dldl.models import create_model, list_models


@pytest.mark.parametrize("name,params", [("thin_age_net", 3_708_229), ("tiny_age_net", 934_869), ("vgg16_bn", 14_770_725)])
def test_parameter_counts(name, params):
    assert sum(p.numel() for p in create_model(name, num_outputs=101).parameters()) == params


def test_registry():
    assert list_models()[:3] == ["thin_age_net", "tiny_age_net", "vgg16_bn"]  # then the other modules' models
    with pytest.raises(ValueError, match="model 'resnet': must be one of thin_age_net"):
        create_model("resnet")


@pytest.mark.parametrize("size", [32, 64, 96, 128, 224])
def test_any_multiple_of_32(size):
    net = create_model("tiny_age_net", num_outputs=41).eval()
    assert net(torch.zeros(1, 3, size, size)).shape == (1, 41)


def test_rejects_bad_sizes():
    net = create_model("tiny_age_net")
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 70, 70))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.zeros(1, 1, 64, 64))


def test_hybrid_pooling_vs_plain_gap():
    hybrid = create_model("thin_age_net")
    gap = create_model("thin_age_net", hybrid_pool=False)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in hybrid.features) == 5
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in gap.features) == 4
    # same parameters; the ablation only changes pooling
    assert sum(p.numel() for p in hybrid.parameters()) == sum(p.numel() for p in gap.parameters())


def test_he_init_and_no_conv_bias():
    net = create_model("thin_age_net")
    conv = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(conv) == 13 and all(c.bias is None for c in conv)
    w = conv[-1].weight
    assert abs(w.std().item() - (2 / (9 * 256)) ** 0.5) < 0.003
    assert torch.all(net.head.bias == 0)


def test_channels_last_gives_same_output():
    net = create_model("tiny_age_net").eval()
    x = torch.randn(2, 3, 64, 64)
    ref = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    assert torch.allclose(net_cl(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-4)
