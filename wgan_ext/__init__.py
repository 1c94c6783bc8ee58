"""wgan_ext: fused CPU/CUDA ops for Lipschitz-constrained (Wasserstein) GAN training in PyTorch.

Drop-ins for your own training loop:
    wgan_ext.clip_(critic.parameters(), 0.01)     # WGAN weight clipping, one fused pass
    opt_d = wgan_ext.ClippedRMSprop(critic.parameters(), lr=5e-5, clip_value=0.01)  # RMSprop step + clip, fused
    clipper = wgan_ext.Clipper(critic, c=0.01); clipper.attach(critic_optimizer)
    wgan_ext.apply_spectral_norm(critic)   # SN on every layer, one batched power iteration per forward
    loss_d = fake_score.mean() - real_score.mean() + wgan_ext.gradient_penalty(critic, real, fake)  # WGAN-GP

Every op falls back to a pure-torch reference where the compiled kernels are missing
(``python -m wgan_ext.info`` shows what was built).
"""

from ._ops import build_info, has_ops
from .clip import Clipper, clip_
from .optim import ClippedAdam, ClippedRMSprop
from .gradient_penalty import gradient_penalty, r1_penalty, r2_penalty
from .spectral_norm import SpectralNorm, SpectralNormGroup, apply_spectral_norm, spectral_norm

__version__ = "0.1.0"

__all__ = ["Clipper", "clip_", "ClippedRMSprop", "ClippedAdam", "gradient_penalty", "r1_penalty", "r2_penalty",
           "SpectralNorm", "SpectralNormGroup", "spectral_norm", "apply_spectral_norm", "has_ops", "build_info", "__version__"]
