"""A tiny, randomly initialised Segment Anything for tests: SAM's real architecture, loader and predictor code at toy
size (the official checkpoints are installed by hand)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from models.sam import SamSegmenter


def tiny_sam(embed_dim: int = 32, depth: int = 2) -> Sam:
    """SAM's architecture at toy size: 128 px input, 8x8 embedding, 32-d everything."""
    image_size, patch, prompt_dim = 128, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=2, mlp_ratio=2,
            out_chans=prompt_dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=4, global_attn_indexes=(depth - 1,),
        ),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(image_size // patch,) * 2,
                                     input_image_size=(image_size, image_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def save_tiny_sam(folder: Path) -> Path:
    """A seeded tiny_sam() checkpoint in `folder`; a random decoder predicts nearly nothing, so its mask head is
    biased to give masks some foreground."""
    torch.manual_seed(0)
    model = tiny_sam()
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.add_(0.5)
    path = folder / "tiny_sam.pth"
    torch.save(model.state_dict(), path)
    return path


class RecordingSam(SamSegmenter):
    """The real predictor, remembering the prompts it was given."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.prompts: list[dict] = []

    def predict(self, image, points=None, labels=None, box=None):  # noqa: ANN001, ANN201
        self.prompts.append({"points": points, "labels": labels, "box": box})
        return super().predict(image, points=points, labels=labels, box=box)
