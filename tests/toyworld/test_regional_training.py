import numpy as np
import torch

from scenecraft.toyworld import train as tw


@torch.no_grad()
def test_regional_processor_with_one_region_equals_plain_attention():
    from diffusers.models.attention_processor import AttnProcessor2_0

    cfg = tw.TrainConfig.smoke("unused")
    torch.manual_seed(0)
    unet = tw.make_unet(cfg).eval()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    enc = torch.randn(2, cfg.max_length, cfg.text_hidden)
    plain = unet(x, t, enc).sample
    proc = tw.RegionalCrossAttention(cfg.max_length)
    unet.set_attn_processor(proc)
    proc.maps = torch.zeros(2, 16, 16, dtype=torch.long)
    other = torch.randn(2, cfg.max_length, cfg.text_hidden)  # region 1's tokens: unused by any pixel
    regional = unet(x, t, torch.cat([enc, other], 1)).sample
    unet.set_attn_processor(AttnProcessor2_0())
    assert torch.allclose(plain, regional, atol=1e-5)


@torch.no_grad()
def test_regional_processor_localises_text():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8).eval()
    proc = tw.RegionalCrossAttention(4)
    maps = torch.zeros(1, 8, 8, dtype=torch.long)
    maps[:, :, 4:] = 1
    proc.maps = maps
    h = torch.randn(1, 64, 16)
    a, b, b2 = (torch.randn(1, 4, 8) for _ in range(3))
    y1 = proc(attn, h, torch.cat([a, b], 1)).view(8, 8, 16)
    y2 = proc(attn, h, torch.cat([a, b2], 1)).view(8, 8, 16)
    assert torch.equal(y1[:, :4], y2[:, :4])  # region 0 never reads region 1's text
    assert not torch.allclose(y1[:, 4:], y2[:, 4:])
    # region 0 equals plain attention over its own text alone
    proc0 = tw.RegionalCrossAttention(4)
    assert torch.allclose(y1[:, :4], proc0(attn, h, a).view(8, 8, 16)[:, :4], atol=1e-6)


def test_region_split_separates_the_boxes():
    rng = np.random.default_rng(0)
    order, grid = tw.region_split([(40, 5, 60, 25), (2, 30, 20, 48)], rng, 16, 4)
    left = order.index(1)  # the second box is the left one
    assert grid.shape == (16, 16)
    assert (grid[:, :5] == left).all() and (grid[:, 10:] == 1 - left).all() or (grid[:7] == 0).all()
    assert tw.region_split([(0, 0, 30, 30), (10, 10, 40, 40)], rng, 16, 4) is None


@torch.no_grad()
def test_base_ratio_one_equals_plain_and_mix_is_linear():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8).eval()
    h = torch.randn(2, 64, 16)
    base, a, b = (torch.randn(2, 4, 8) for _ in range(3))
    maps = torch.zeros(2, 8, 8, dtype=torch.long)
    maps[:, :, 4:] = 1
    proc = tw.RegionalCrossAttention(4)
    proc.maps = maps
    enc = torch.cat([base, a, b], 1)
    proc.base_ratio = torch.tensor([1.0, 1.0])
    assert torch.allclose(proc(attn, h, enc), AttnProcessor2_0()(attn, h, base), atol=1e-6)
    proc.base_ratio = 0.0
    hard = proc(attn, h, enc)
    hard_ref = tw.RegionalCrossAttention(4)
    hard_ref.maps = maps
    assert torch.allclose(hard, hard_ref(attn, h, torch.cat([a, b], 1)), atol=1e-6)
    proc.base_ratio = 0.3  # to_out is affine, so the mix of outputs is the mix of attentions
    mixed = proc(attn, h, enc)
    plain = AttnProcessor2_0()(attn, h, base)
    assert torch.allclose(mixed, 0.3 * plain + 0.7 * hard, atol=1e-5)
