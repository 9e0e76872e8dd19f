"""PyTorch reference: the same VGG-att3-concat-pc train step, timed like train_step.py.

Runs in a throwaway virtual environment, never in the project's (PyTorch is not a dependency):

    python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python benchmarks/torch_reference.py --batch-size 128

The network is the reference implementation's VGG-att3-concat-pc for 32x32 inputs (spec
section 1; the same layers, widths and parameter count as `create_model` with the CIFAR-100
preset: the script prints the count to compare). One step: forward in training mode, cross
entropy, backward, SGD with momentum 0.9 and weight decay 5e-4, on one synthetic batch kept
in memory (input pipeline excluded, as in train_step.py's `synthetic` rows). Median of
`--steps` steps after `--warmup`, for each memory layout.
"""

import argparse
import datetime
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class Attention(nn.Module):
    """pc compatibility <u, l + g>, softmax over space, g_a = sum of a * l."""

    def __init__(self, channels: int):
        super().__init__()
        self.u = nn.Conv2d(channels, 1, 1, bias=False)

    def forward(self, local: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, c, h, w = local.shape
        scores = self.u(local + g[:, :, None, None]).view(b, -1)
        a = F.softmax(scores, dim=1).view(b, 1, h, w)
        return (a * local).sum(dim=(2, 3))


class VGGAtt3(nn.Module):
    def __init__(self, num_classes: int = 100, image_size: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for stage in STAGES:
            block = []
            for c in stage:
                block.append(conv_bn_relu(c_in, c))
                c_in = c
            layers.append(nn.Sequential(*block))
        self.stages = nn.ModuleList(layers)
        self.conv14, self.conv15 = conv_bn_relu(512, 512), conv_bn_relu(512, 512)
        self.global_feature = nn.Conv2d(512, 512, image_size // 32)
        self.project = nn.Conv2d(256, 512, 1, bias=False)
        self.attention = nn.ModuleList(Attention(512) for _ in range(3))
        self.classifier = nn.Linear(3 * 512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index >= 2:
                taps.append(x)
                x = F.max_pool2d(x, 2)
        x = F.max_pool2d(self.conv14(x), 2)
        x = F.max_pool2d(self.conv15(x), 2)
        g = self.global_feature(x).flatten(1)
        taps[0] = self.project(taps[0])
        descriptors = [att(local, g) for att, local in zip(self.attention, taps, strict=True)]
        return self.classifier(torch.cat(descriptors, dim=1))


def time_steps(model, optimizer, images, labels, warmup: int, steps: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"# PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print("\n| framework | layout | batch | parameters | step ms (median) | min-max | img/s |")
    print("|---|---|---|---|---|---|---|")
    for layout in (torch.contiguous_format, torch.channels_last):
        model = VGGAtt3(args.num_classes).to(memory_format=layout).train()
        params = sum(p.numel() for p in model.parameters())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        images = torch.randn(args.batch_size, 3, 32, 32).to(memory_format=layout)
        labels = torch.randint(0, args.num_classes, (args.batch_size,))
        times = time_steps(model, optimizer, images, labels, args.warmup, args.steps)
        median = statistics.median(times)
        name = "channels_last" if layout == torch.channels_last else "NCHW"
        print(
            f"| PyTorch | {name} | {args.batch_size} | {params:,} | {median * 1e3:.1f} "
            f"| {min(times) * 1e3:.0f}-{max(times) * 1e3:.0f} | {args.batch_size / median:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
