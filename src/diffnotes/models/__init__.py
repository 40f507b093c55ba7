"""Small, readable networks for every chapter; one file per architecture, dataclass configs."""

from diffnotes.models.autoencoder import Autoencoder, AutoencoderConfig, AutoencoderOutput
from diffnotes.models.backbone import BackboneConfig, ConvConfig
from diffnotes.models.blocks import count_parameters, timestep_embedding
from diffnotes.models.classifier import ClassifierConfig, NoisyClassifier
from diffnotes.models.gan import (
    DDGANDiscriminator,
    DDGANGenerator,
    Discriminator,
    GANConfig,
    Generator,
)
from diffnotes.models.latent_unet import CaptionEncoder, LatentUNet, LatentUNetConfig
from diffnotes.models.mlp import MLPConfig, TimeMLP
from diffnotes.models.unet import UNet, UNetConfig
from diffnotes.models.video_unet import VideoUNet, VideoUNetConfig

__all__ = [
    "Autoencoder",
    "AutoencoderConfig",
    "AutoencoderOutput",
    "BackboneConfig",
    "CaptionEncoder",
    "ClassifierConfig",
    "ConvConfig",
    "DDGANDiscriminator",
    "DDGANGenerator",
    "Discriminator",
    "GANConfig",
    "Generator",
    "LatentUNet",
    "LatentUNetConfig",
    "MLPConfig",
    "NoisyClassifier",
    "TimeMLP",
    "UNet",
    "UNetConfig",
    "VideoUNet",
    "VideoUNetConfig",
    "count_parameters",
    "timestep_embedding",
]
