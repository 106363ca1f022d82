"""
Lever trial: the classification and box subnets' first convs read the same input;
one 256->512 conv over their stacked weights against the two 256->256 convs, at P3 of an
800x1216 input (100x152) and of a 512x512 one (64x64), NCHW and channels_last, interleaved.

    python experiment_records/speed_levers/subnet_first_convs.py 15
"""
import sys

import torch

from _common import interleaved_medians


def main(repeats):
    torch.manual_seed(0)
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for height, width in ((100, 152), (64, 64)):
            x = torch.randn(1, 256, height, width).contiguous(memory_format=fmt)
            cls_conv, box_conv = (torch.nn.Conv2d(256, 256, 3, padding=1).to(memory_format=fmt) for _ in range(2))
            both = torch.nn.Conv2d(256, 512, 3, padding=1).to(memory_format=fmt)
            runs = {"two convs": lambda: (cls_conv(x), box_conv(x)), "one stacked conv": lambda: both(x).split(256, 1)}
            with torch.no_grad():
                medians = interleaved_medians(runs, repeats)
            print(f"{'channels_last' if channels_last else 'NCHW'} {height}x{width}: "
                  + ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items())
                  + f", ratio {medians['one stacked conv'] / medians['two convs']:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
