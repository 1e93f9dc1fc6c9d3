"""CNN: two stages of (conv 3x3, BatchNorm, ReLU) x 2 then 2x2 max pooling, then a fully connected head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CNNConfig:
    image_size: int = 28
    channels: tuple[int, int] = (32, 64)
    hidden: int = 256
    dropout: float = 0.3
    num_classes: int = 10


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # Bias is redundant before BatchNorm.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.features = nn.Sequential(
            conv_block(1, c1),
            conv_block(c1, c1),
            nn.MaxPool2d(2),  # (B, c1, H/2, W/2)
            conv_block(c1, c2),
            conv_block(c2, c2),
            nn.MaxPool2d(2),  # (B, c2, H/4, W/4)
        )
        side = config.image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 1, H, W) normalised pixels -> (B, num_classes) logits
        return self.head(self.features(x))
