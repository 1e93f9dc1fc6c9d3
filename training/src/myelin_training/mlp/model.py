"""MLP: flatten, then Linear -> ReLU -> Dropout blocks, then a linear layer to the class logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MLPConfig:
    image_size: int = 28
    hidden: tuple[int, ...] = (1024, 1024)
    dropout: float = 0.2
    num_classes: int = 10


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten()]
        width = config.image_size * config.image_size
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, config.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 1, H, W) normalised pixels -> (B, num_classes) logits
        return self.net(x)
