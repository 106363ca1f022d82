"""
Lever trial: could Winograd convolution beat oneDNN's direct 3x3 conv here? Times one
256->256 3x3 conv of the head at P3 of an 800x1216 input (100x152, channels_last) against the
batched GEMM alone that Winograd F(2x2,3x3) (16 GEMMs over 50x76 tiles) and F(4x4,3x3)
(36 GEMMs over 25x38 tiles) would need, plus their input / output transforms as matmuls.

    python experiment_records/speed_levers/winograd_gemm.py
"""
import torch

from _common import median_ms


def main():
    torch.manual_seed(0)
    channels, height, width = 256, 100, 152
    x = torch.randn(1, channels, height, width).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval().to(memory_format=torch.channels_last)
    with torch.no_grad():
        print(f"direct conv (oneDNN): {median_ms(lambda: conv(x), 7):.0f} ms")
        for name, tiles, points, outputs in (("F(2x2,3x3)", 50 * 76, 16, 4), ("F(4x4,3x3)", 25 * 38, 36, 16)):
            u, v = torch.randn(points, channels, channels), torch.randn(points, channels, tiles)
            gemm = median_ms(lambda: torch.matmul(u, v), 7)
            d, b = torch.randn(channels * tiles, points), torch.randn(points, points)
            to_winograd = median_ms(lambda: d @ b, 7)
            m, a = torch.randn(points, channels * tiles), torch.randn(outputs, points)
            from_winograd = median_ms(lambda: a @ m, 7)
            print(f"{name}: GEMM {gemm:.0f} ms, input transform {to_winograd:.0f} ms, "
                  f"output transform {from_winograd:.0f} ms, total {gemm + to_winograd + from_winograd:.0f} ms")


if __name__ == "__main__":
    main()
