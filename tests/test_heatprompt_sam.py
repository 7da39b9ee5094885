"""The assembled model: batched decoding, prompt switch, clicks, checkpoint state."""

import functools

import pytest
import torch

from model.checkpoint import load_bundle, new_bundle, save_checkpoint
from model.errors import CheckpointError
from model.full_res import FullResRefinement
from model.fusion import texture_contrast
from model.heatprompt_sam import HeadsConfig
from model.mask_decoding import decode_batched


def _frozen(enc, n: int = 3):  # type: ignore[no-untyped-def]
    torch.manual_seed(5)
    images = torch.randint(0, 255, (n, enc.input_size, enc.input_size, 3), dtype=torch.uint8)
    return enc.encode(images)


def test_batched_decoder_matches_a_per_image_loop(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    heads = new_bundle(tiny_encoder, label_sigma=2.0).heads.eval()
    frozen = _frozen(tiny_encoder)
    emb = heads.embedding(frozen)
    dense = torch.randn_like(emb)
    sparse = torch.randn(3, 2, 256)
    pe = heads.prompt_encoder.get_dense_pe()
    decode = functools.partial(
        decode_batched,
        heads.mask_decoder,
        image_embeddings=emb,
        image_pe=pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )
    with torch.no_grad():
        batched, iou, own = decode()
        assert torch.equal(own, batched)  # no high-res features: the decoder's own mask
        hq = torch.randn(3, 32, *batched.shape[-2:])
        with_hq, _, own_hq = decode(hq_features=hq)
        assert torch.allclose(own_hq, batched, atol=1e-5)
        assert not torch.allclose(with_hq, batched, atol=1e-2)
        for i in range(3):
            single, single_iou = heads.mask_decoder(
                image_embeddings=emb[i : i + 1],
                image_pe=pe,
                sparse_prompt_embeddings=sparse[i : i + 1],
                dense_prompt_embeddings=dense[i : i + 1],
                multimask_output=False,
            )
            assert torch.allclose(batched[i], single[0], atol=1e-5)
            assert torch.allclose(iou[i], single_iou[0], atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2])
def test_outputs_have_the_documented_shapes(tiny_encoder, scale: int) -> None:  # type: ignore[no-untyped-def]
    config = HeadsConfig(fusion_scale=scale)
    heads = new_bundle(tiny_encoder, label_sigma=2.0, heads=config).heads.eval()
    out = heads(_frozen(tiny_encoder, 2))
    g = tiny_encoder.grid_size
    assert out.heatmap_logits.shape == (2, 1, g * scale // 2, g * scale // 2)
    assert out.mask_logits.shape == (2, 1, 64, 64)
    assert out.decoder_logits.shape == (2, 1, 4 * g, 4 * g)


def test_checkpoint_without_fusion_scale_loads_its_heatmap(tiny_encoder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    old = new_bundle(tiny_encoder, label_sigma=2.0, heads=HeadsConfig(fusion_scale=1))
    del old.meta.heads["fusion_scale"]  # as written before the setting existed
    path = save_checkpoint(tmp_path / "old.pt", old)
    loaded = load_bundle(path, encoder=tiny_encoder)
    assert loaded.heads.config.fusion_scale == 1
    frozen = _frozen(tiny_encoder, 1)
    with torch.no_grad():
        expected = old.heads.eval()(frozen).heatmap_logits
        assert torch.allclose(loaded.heads(frozen).heatmap_logits, expected, atol=1e-6)


def test_checkpoint_with_unknown_head_settings_is_refused(tiny_encoder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="fusion_scale"):
        HeadsConfig(fusion_scale=3)
    bundle = new_bundle(tiny_encoder, label_sigma=2.0)
    bundle.meta.heads["fusion_scale"] = 3
    path = save_checkpoint(tmp_path / "bad.pt", bundle)
    with pytest.raises(CheckpointError, match="head settings"):
        load_bundle(path, encoder=tiny_encoder)


def test_prompt_switch_and_clicks_change_the_mask(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    heads = new_bundle(tiny_encoder, label_sigma=2.0).heads.eval()
    frozen = _frozen(tiny_encoder, 2)
    with torch.no_grad():
        on = heads(frozen).mask_logits
        off = heads(frozen, use_prompt=False).mask_logits
        mixed = heads(frozen, use_prompt=torch.tensor([True, False])).mask_logits
        points = (torch.tensor([[[10.0, 20.0]], [[30.0, 30.0]]]), torch.tensor([[1.0], [0.0]]))
        clicked = heads(frozen, points=points).mask_logits
    assert not torch.allclose(on, off)
    assert torch.allclose(mixed[0], on[0]) and torch.allclose(mixed[1], off[1])
    assert not torch.allclose(clicked, on)


def test_mask_loss_reaches_every_trainable_part(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    heads = new_bundle(tiny_encoder, label_sigma=2.0).heads.train()
    heads(_frozen(tiny_encoder, 2)).mask_logits.mean().backward()
    for name in ("fusion", "heatmap_head", "segment_encoding", "mask_decoder"):
        grads = [p.grad for p in getattr(heads, name).parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_trainable_state_excludes_pretrained_sam_parts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from model.encoders import build_encoder
    from model.encoders.sam_vit import SAM_VARIANTS, build_sam

    path = tmp_path / "tiny.pth"
    torch.save(build_sam(SAM_VARIANTS["tiny"]).state_dict(), path)
    enc = build_encoder("sam_tiny", sam_checkpoint=path, input_size=64)
    heads = new_bundle(enc, label_sigma=2.0).heads
    keys = heads.trainable_state_dict()
    assert not any(k.startswith(("mask_decoder.", "prompt_encoder.")) for k in keys)
    assert not any(p.requires_grad for p in heads.mask_decoder.parameters())
    with pytest.raises(KeyError, match="missing"):
        heads.load_trainable_state_dict({})


def test_full_res_refinement_starts_as_identity_and_sees_single_pixels() -> None:
    torch.manual_seed(0)
    refine = FullResRefinement(pixel_channels=3)
    logits, pixels = torch.randn(1, 1, 16, 16), torch.randn(1, 3, 16, 16)
    assert torch.equal(refine(logits, pixels), logits)  # zero-initialised last layer
    torch.nn.init.normal_(refine.net[-1].weight)
    poked = pixels.clone()
    poked[0, :, 5, 6] += 5.0  # one pixel brighter
    with torch.no_grad():
        diff = (refine(logits, poked) - refine(logits, pixels)).abs()[0, 0]
    # The poked pixel's own logit moves far more than the image at large, which only
    # feels the small shift of the image-wide contrast statistics.
    assert diff[5, 6] > 10 * diff.median()


def test_effnet_heads_correct_masks_at_full_resolution() -> None:
    from model.encoders import build_encoder

    enc = build_encoder("effnet_lite0", input_size=64)
    heads = new_bundle(enc, label_sigma=2.0).heads.train()
    assert heads.full_res is not None and heads.pixel_levels == [0]
    frozen = enc.encode(torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8))
    out = heads(frozen)
    assert out.mask_logits.shape == (2, 1, 64, 64)
    out.mask_logits.mean().backward()
    assert heads.full_res.net[-1].weight.grad.abs().sum() > 0


def test_texture_contrast_standardises_each_channel_by_its_own_image() -> None:
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 9, 7, generator=gen) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1)
    feat = feat + torch.tensor([0.0, -3.0, 40.0]).view(1, 3, 1, 1)
    out = texture_contrast(feat)
    flat = feat.double().flatten(2)
    mean = flat.mean(-1, keepdim=True)
    std = flat.std(-1, keepdim=True)  # unbiased, the statistics trained checkpoints used
    expected = ((flat - mean) / (std + 1e-5)).view_as(feat)
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert texture_contrast(feat.bfloat16()).dtype == torch.bfloat16


def test_texture_contrast_gradient_matches_the_std_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 3, 6, 5, generator=gen) * 2.0 + 1.0
    weights = torch.randn(2, 3, 6, 5, generator=gen)
    ours = feat.clone().requires_grad_()
    (texture_contrast(ours) * weights).sum().backward()
    ref = feat.clone().requires_grad_()
    mean, std = ref.mean((-2, -1), keepdim=True), ref.std((-2, -1), keepdim=True)
    (((ref - mean) / (std + 1e-5)) * weights).sum().backward()
    assert ours.grad is not None and ref.grad is not None
    assert torch.allclose(ours.grad, ref.grad, atol=1e-4)


def test_heads_loaded_on_a_cpu_run_channels_last_with_the_same_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from model.encoders import build_encoder

    torch.manual_seed(0)
    enc = build_encoder("effnet_lite0", input_size=64)
    bundle = new_bundle(enc, label_sigma=2.0)
    for p in bundle.heads.full_res.parameters():  # not the identity it starts as
        torch.nn.init.normal_(p, std=0.2)
    saved = save_checkpoint(tmp_path / "v1.pt", bundle)
    loaded = load_bundle(saved, encoder=enc)
    kernels = [p for p in loaded.heads.parameters() if p.dim() == 4]
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)
    assert any(not k.is_contiguous() for k in kernels)
    frozen = enc.encode(torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8))
    with torch.inference_mode():
        want, got = bundle.heads.eval()(frozen), loaded.heads(frozen)
    assert torch.allclose(got.mask_logits, want.mask_logits, atol=1e-4)
    assert torch.allclose(got.heatmap_logits, want.heatmap_logits, atol=1e-5)
    resaved = load_bundle(save_checkpoint(tmp_path / "v2.pt", loaded), encoder=enc)
    for name, tensor in resaved.heads.trainable_state_dict().items():
        assert torch.equal(tensor, bundle.heads.trainable_state_dict()[name]), name
