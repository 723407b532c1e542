"""A literal StyleGAN2 forward pass, written from docs/stylegan2-format.md for cross-checks and benchmarks.

One grouped convolution per layer with per-sample modulated weights, the upsampling conv as a
stride-2 transposed conv followed by a separate 4×4 FIR pass (zero insertion, padding, filtering),
exactly as the format doc states. It reads a state dict (name → tensor) and a GeneratorConfig.
Not part of the library: it is the slow, obviously-correct reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _fc(x, sd, prefix, lr_mul, activation):
    w = sd[prefix + ".weight"] * (lr_mul / math.sqrt(sd[prefix + ".weight"].shape[1]))
    x = x @ w.t() + sd[prefix + ".bias"] * lr_mul
    return F.leaky_relu(x, 0.2) * math.sqrt(2) if activation == "lrelu" else x


def plain_mapping(sd, cfg, z, truncation_psi=1.0):
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for i in range(cfg.mapping_layers):
        x = _fc(x, sd, f"mapping.fc{i}", cfg.mapping_lr_multiplier, "lrelu")
    x = x.unsqueeze(1).repeat(1, cfg.num_ws, 1)
    w_avg = sd["mapping.w_avg"]
    return w_avg + truncation_psi * (x - w_avg) if truncation_psi != 1 else x


def _upfirdn2d(x, f, up, pad, gain):
    """Zero-insertion upsampling by `up`, padding (left/top, right/bottom), true convolution with f·gain."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = (f * gain).flip([0, 1]).reshape(1, 1, 4, 4).repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def _modconv(x, weight, styles, demodulate, up):
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    wm = weight.unsqueeze(0) * styles.reshape(n, 1, cin, 1, 1)  # [N, out, in, kh, kw]
    if demodulate:
        wm = wm * (wm.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    x = x.reshape(1, n * cin, h, w)
    k = weight.shape[-1]
    if up == 1:
        x = F.conv2d(x, wm.reshape(n * cout, cin, k, k), padding=k // 2, groups=n)
    else:
        wt = wm.transpose(1, 2).reshape(n * cin, cout, k, k)
        x = F.conv_transpose2d(x, wt, stride=2, groups=n)
    return x.reshape(n, cout, *x.shape[2:])


def _layer(x, w, sd, prefix, cfg, up, noise_mode, generator):
    styles = _fc(w, sd, prefix + ".affine", 1.0, "linear")
    x = _modconv(x, sd[prefix + ".weight"], styles, True, up)
    if up == 2:
        x = _upfirdn2d(x, sd[prefix + ".resample_filter"], 1, (1, 1), 4.0)
    if noise_mode == "const":
        x = x + sd[prefix + ".noise_const"] * sd[prefix + ".noise_strength"]
    elif noise_mode == "random":
        x = x + torch.randn((x.shape[0], 1, *x.shape[2:]), generator=generator) * sd[prefix + ".noise_strength"]
    x = F.leaky_relu(x + sd[prefix + ".bias"].reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)
    return x.clamp(-cfg.conv_clamp, cfg.conv_clamp) if cfg.conv_clamp is not None else x


def _torgb(x, w, sd, prefix, cfg):
    styles = _fc(w, sd, prefix + ".affine", 1.0, "linear") / math.sqrt(x.shape[1])
    y = _modconv(x, sd[prefix + ".weight"], styles, False, 1) + sd[prefix + ".bias"].reshape(1, -1, 1, 1)
    return y.clamp(-cfg.conv_clamp, cfg.conv_clamp) if cfg.conv_clamp is not None else y


def plain_synthesis(sd, cfg, ws, noise_mode="const", generator=None):
    n = ws.shape[0]
    x = sd["synthesis.b4.const"].unsqueeze(0).repeat(n, 1, 1, 1)
    x = _layer(x, ws[:, 0], sd, "synthesis.b4.conv1", cfg, 1, noise_mode, generator)
    img = _torgb(x, ws[:, 1], sd, "synthesis.b4.torgb", cfg)
    idx = 1
    res = 8
    while res <= cfg.img_resolution:
        p = f"synthesis.b{res}"
        x = _layer(x, ws[:, idx], sd, p + ".conv0", cfg, 2, noise_mode, generator)
        x = _layer(x, ws[:, idx + 1], sd, p + ".conv1", cfg, 1, noise_mode, generator)
        up = _upfirdn2d(img, sd[p + ".resample_filter"], 2, (2, 1), 4.0)
        img = up + _torgb(x, ws[:, idx + 2], sd, p + ".torgb", cfg)
        idx += 2
        res *= 2
    return img
