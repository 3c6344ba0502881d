"""Tiny random open-vocabulary detectors for plumbing tests: OWLv2 and Grounding DINO folders built offline.

Each ``save_tiny_*`` writes a folder that ``AutoProcessor.from_pretrained`` and
``AutoModelForZeroShotObjectDetection.from_pretrained`` read, exactly as they read a downloaded checkpoint:
the model (random weights from ``seed``, a few layers of width 32 or less), its image processor (64 px; OWLv2's does
not resize, which needs scipy: give it 64 px pictures), and its
tokenizer (OWLv2: the real CLIP BPE tokenizer shipped with scenecraft; Grounding DINO, at 128 px: a BERT word-piece
vocabulary of the toy world's words, written here). The detections are random: they test that a verifier runs
and returns a verdict of the right shape, not what it finds. ``save_tiny_sam`` writes a tiny random SAM (64 px) for
``DetectorVerifier(sam_model=...)``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["save_tiny_owlv2", "save_tiny_grounding_dino", "save_tiny_sam", "DETECTOR_WORDS"]

#: The words of the tiny Grounding DINO vocabulary (besides BERT's special tokens).
DETECTOR_WORDS = (".", ",", "a", "an", "the", "and", "red", "orange", "yellow", "green", "blue", "purple", "circle",
                  "square", "triangle", "cat", "dog", "background")
_SIDE = 64


def _image_processor(name: str, **kwargs):
    """The PIL-backend image processor ``name`` (no torchvision needed), else the default one."""
    import transformers

    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


def save_tiny_owlv2(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``Owlv2ForObjectDetection`` (64 px, patches of 16: 16 boxes) and its processor to
    ``path``."""
    import torch
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor

    from . import clip_tokenizer_path

    path = Path(path)
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(image_size=_SIDE, patch_size=16, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_tokenizer_path()), model_max_length=16)
    # do_resize False: the PIL backend resizes with scipy, which the test environment lacks; pictures are 64 px
    image_processor = _image_processor("Owlv2ImageProcessor", size={"height": _SIDE, "width": _SIDE}, do_resize=False)
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_grounding_dino(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``GroundingDinoForObjectDetection`` (Swin backbone, BERT text encoder of 2 layers, 8
    queries) with its processor and a word-piece vocabulary of :data:`DETECTOR_WORDS` to ``path``."""
    import torch
    from transformers import (
        BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoProcessor, SwinConfig,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *DETECTOR_WORDS]
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    backbone = SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=2 * _SIDE,
                          out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    text = {"model_type": "bert", "vocab_size": len(vocab), "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 64}
    config = GroundingDinoConfig(d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                                 decoder_attention_heads=4, encoder_ffn_dim=8, decoder_ffn_dim=8, num_queries=8,
                                 num_feature_levels=4, encoder_n_points=2, decoder_n_points=2, max_text_len=32,
                                 backbone_config=backbone, text_config=text)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config).eval()
    tokenizer = BertTokenizer(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=32)
    image_processor = _image_processor("GroundingDinoImageProcessor",
                                       size={"shortest_edge": 2 * _SIDE, "longest_edge": 2 * _SIDE})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_sam(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``SamModel`` (64 px input, patches of 16) and its ``SamProcessor`` to ``path``."""
    import torch
    from transformers import SamConfig, SamModel, SamProcessor

    path = Path(path)
    config = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=_SIDE, patch_size=16,
                           output_channels=32, window_size=2, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=32, image_size=_SIDE, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config).eval()
    side, mask_side = _SIDE, _SIDE // 4
    image_processor = _image_processor("SamImageProcessor", size={"longest_edge": side},
                                       pad_size={"height": side, "width": side}, mask_size={"longest_edge": mask_side},
                                       mask_pad_size={"height": mask_side, "width": mask_side})
    model.save_pretrained(path)
    SamProcessor(image_processor=image_processor).save_pretrained(path)
    return path
