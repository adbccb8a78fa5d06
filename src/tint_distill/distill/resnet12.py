"""ResNet-12, the few-shot learning standard backbone, registered in timm as ``resnet12``.

The architecture of MetaOptNet (Lee et al., 2019) and FEAT (Ye et al., 2020): four residual blocks of
widths 64-160-320-640, each three 3x3 conv-BN-LeakyReLU(0.1) layers (the last without its activation
before the sum) beside a 1x1 conv-BN shortcut, then LeakyReLU(0.1) and a 2x2 max-pool; a global
average pool and a linear classifier. 84 px inputs give 5x5 maps of 640 channels before the pool.
The 12 layers: 4 blocks x 3 convolutions (shortcuts excluded).

Left out on purpose: DropBlock (MetaOptNet/FEAT regularise the last two blocks with it); the
students here train with the distillation recipe's own augmentation and weight decay.

Importing this module registers ``resnet12`` with :func:`timm.models.register_model`, so
``timm.create_model("resnet12", num_classes=5)`` works like any timm name (the student code imports
it wherever a student is built). The model follows timm's classifier interface: ``num_classes``,
``num_features``, ``forward_features``, ``forward_head(pre_logits=...)``, ``get_classifier``,
``reset_classifier`` and a ``pretrained_cfg`` naming ``fc`` as its classifier.
"""

from __future__ import annotations

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["ResNet12", "resnet12"]

RESNET12_WIDTHS = (64, 160, 320, 640)
LEAKY_SLOPE = 0.1


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResNet12Block(nn.Module):
    """Three 3x3 conv-BN(-LeakyReLU) layers plus a 1x1 conv-BN shortcut, LeakyReLU, 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels, 3)
        self.conv2 = _conv_bn(out_channels, out_channels, 3)
        self.conv3 = _conv_bn(out_channels, out_channels, 3)
        self.shortcut = _conv_bn(in_channels, out_channels, 1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        out = self.conv3(out)
        return self.pool(self.act(out + self.shortcut(x)))


class ResNet12(nn.Module):
    """ResNet-12 classifier (see the module docstring); ``num_classes=0`` gives pooled features."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, widths: tuple[int, ...] = RESNET12_WIDTHS,
                 drop_rate: float = 0.0, global_pool: str = "avg", **_ignored):
        super().__init__()
        if global_pool != "avg":
            raise ValueError(f"resnet12 pools by average only, got global_pool={global_pool!r}")
        channels = (in_chans, *widths)
        self.stages = nn.Sequential(*(ResNet12Block(a, b) for a, b in zip(channels[:-1], channels[1:])))
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop_rate = drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=width, reduction=2 ** (i + 1), module=f"stages.{i}")
                             for i, width in enumerate(widths)]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu", a=LEAKY_SLOPE)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"resnet12 pools by average only, got global_pool={global_pool!r}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's feature maps ``[N, 640, H/16, W/16]``."""
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# No weights are published for it (url/hf_hub_id empty): pretrained=True is refused by timm.
default_cfgs = generate_default_cfgs({
    "resnet12": {
        "num_classes": 1000, "input_size": (3, 84, 84), "pool_size": (5, 5), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "first_conv": "stages.0.conv1.0", "classifier": "fc",
    },
})


@register_model
def resnet12(pretrained: bool = False, **kwargs) -> ResNet12:
    """ResNet-12 (64-160-320-640, LeakyReLU 0.1, no DropBlock) of MetaOptNet / FEAT."""
    return build_model_with_cfg(ResNet12, "resnet12", pretrained, **kwargs)
