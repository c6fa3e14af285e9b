import torch

from nfplug.api import SamplerContext
from nfplug.testing import check_sampler
from nfplug_patches import PatchSampler


def test_the_sampler_follows_the_nfplug_contract():
    check_sampler(PatchSampler, PatchSampler.Config(patch_size=2), name="patch")


def test_each_patch_is_a_square_of_neighbouring_pixels_in_one_image():
    context = SamplerContext(n_images=3, height=12, width=16, batch_size=64, max_steps=20, task="scene", device=torch.device("cpu"),
                             images=torch.zeros(3, 12, 16, 3), predict_errors=lambda index, xy: torch.zeros(index.shape[0]))
    batch = PatchSampler(PatchSampler.Config(patch_size=4), context).sample(0, torch.Generator().manual_seed(0))
    patches = batch.pixel_xy.reshape(4, 16, 2) - 0.5  # 64 rays = 4 patches of 4x4 pixels
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    assert torch.equal(patches - patches[:, :1], torch.stack([cols, rows], -1).reshape(1, 16, 2).expand(4, -1, -1))
    assert (batch.image_index.reshape(4, 16) == batch.image_index.reshape(4, 16)[:, :1]).all()
