"""Personalized DeepFilterNet2-style backbone (``pse: pdfnet2``), 16 kHz, fully causal.

Signal path (one frame every ``hop`` = 10 ms):

1. Causal STFT: frame ``k`` covers input samples ``[(k+1)·hop - n_fft, (k+1)·hop)`` (zeros before
   the start), sqrt-Hann analysis and synthesis windows (n_fft 320 = 20 ms, 50 % overlap, perfect
   reconstruction). Output is weighted overlap-add, so it is delayed by ``n_fft - hop`` = 160
   samples (``latency_samples``).
2. Features: log ERB-band energies (``nb_erb`` rectangular ERB bands) ``[B, 1, T, nb_erb]`` and
   magnitude-compressed complex low band (``nb_df`` bins: 0-3.2 kHz in ``cpu``, 0-4.8 kHz in ``paper``) ``[B, 2, T, nb_df]``.
3. Two conv encoders (causal in time: each conv keeps its last ``kt - 1`` input frames as state),
   flattened and joined by addition -> ``[B, T, H]``.
4. Speaker embedding ``[B, D]`` (scaled by sqrt(D) and projected to ``P``) injected according to
   ``cfg.injection``: ``join`` (concatenated where the branches join, as in pDFNet2),
   ``encoder`` (FiLM on the first ERB encoder layer) or ``decoder`` (concatenated to the GRU
   output before both decoders).
5. GRU core (``gru_layers`` x ``H``).
6. ERB decoder (transposed convs with encoder skips) -> sigmoid gains per ERB band, applied to
   every bin of its band.
7. DF decoder (GRU + linear + per-bin conv path) -> complex deep-filter coefficients of order
   ``df_order`` over the current and past frames of the low band; the filtered low band is added
   to the gained spectrum as a residual (zero-initialised, so training starts from the ERB path).

Size presets (``cfg.size``): ``tiny`` (tests, < 50 k params), ``cpu`` (~0.4 M params, ~55 MMAC/s),
``cpu_wide`` (~0.63 M params, ~83 MMAC/s: GRU 160 wide, deep filter up to 4.8 kHz), ``paper``
(~2.3 M params, like pDFNet2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.audio import SR
from bench.config import PSEConfig
from bench.pse.base import PSEModel, State
from bench.registry import register


@dataclass(frozen=True)
class Preset:
    """Architecture hyper-parameters of one size preset."""

    n_fft: int = 320
    hop: int = 160
    nb_erb: int = 32
    nb_df: int = 96
    df_order: int = 5
    conv_ch: int = 32
    hidden: int = 192
    gru_layers: int = 2
    df_gru_layers: int = 1
    emb_proj: int = 64
    kt_first: int = 3
    kt: int = 2


PRESETS: dict[str, Preset] = {
    "tiny": Preset(nb_erb=16, nb_df=32, df_order=3, conv_ch=8, hidden=32, gru_layers=1,
                   df_gru_layers=0, emb_proj=16),
    "cpu": Preset(nb_df=64, conv_ch=16, hidden=128, gru_layers=2, df_gru_layers=0, emb_proj=64),
    # ``cpu`` with a wider GRU and the deep filter up to 4.8 kHz: 0.63 M params, 83 MMAC/s, about
    # the same CPU training step (0.32 s vs 0.30 s, batch 16 x 1.5 s, one thread)
    "cpu_wide": Preset(nb_df=96, conv_ch=16, hidden=160, gru_layers=2, df_gru_layers=0, emb_proj=64),
    "paper": Preset(conv_ch=48, hidden=256, gru_layers=3, df_gru_layers=1, emb_proj=128),
}


# --------------------------------------------------------------------------- ERB bands
def _freq2erb(f: float) -> float:
    return 9.265 * math.log1p(f / (24.7 * 9.265))


def _erb2freq(e: float) -> float:
    return 24.7 * 9.265 * (math.exp(e / 9.265) - 1.0)


def erb_widths(n_fft: int, nb_bands: int, sr: int = SR, min_width: int = 2) -> list[int]:
    """Bin counts of ``nb_bands`` rectangular ERB bands covering ``n_fft // 2 + 1`` bins."""
    n_freqs = n_fft // 2 + 1
    if nb_bands * min_width > n_freqs:
        raise ValueError(f"{nb_bands} ERB bands of >= {min_width} bins do not fit {n_freqs} bins")
    step = (_freq2erb(sr / 2) - _freq2erb(0.0)) / nb_bands
    bin_hz = sr / n_fft
    widths: list[int] = []
    prev, over = 0, 0
    for i in range(1, nb_bands + 1):
        edge = round(_erb2freq(i * step) / bin_hz)
        w = edge - prev - over
        if w < min_width:
            over, w = min_width - w, min_width
        else:
            over = 0
        widths.append(w)
        prev = edge
    diff = n_freqs - sum(widths)
    # Give/take the remainder from the widest bands (top of the spectrum).
    i = len(widths) - 1
    while diff != 0:
        if diff > 0:
            widths[i] += 1
            diff -= 1
        elif widths[i] > min_width:
            widths[i] -= 1
            diff += 1
        i = i - 1 if i > 0 else len(widths) - 1
    return widths


def erb_matrices(n_fft: int, nb_bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(avg [F, nb], assign [nb, F])``: band-averaging and band-to-bin expansion matrices."""
    widths = erb_widths(n_fft, nb_bands)
    n_freqs = n_fft // 2 + 1
    assign = torch.zeros(nb_bands, n_freqs)
    start = 0
    for b, w in enumerate(widths):
        assign[b, start : start + w] = 1.0
        start += w
    avg = (assign / assign.sum(1, keepdim=True)).t().contiguous()
    return avg, assign


# --------------------------------------------------------------------------- layers
class CausalConv(nn.Module):
    """Conv over ``[B, C, T, F]``, causal in time (keeps ``kt - 1`` past frames), same/strided in F."""

    def __init__(self, cin: int, cout: int, kt: int, kf: int = 3, stride_f: int = 1) -> None:
        super().__init__()
        self.kt = kt
        self.cin = cin
        self.conv = nn.Conv2d(cin, cout, (kt, kf), stride=(1, stride_f), padding=(0, kf // 2))

    def init_buf(self, batch: int, n_freq: int, device, dtype) -> torch.Tensor:
        return torch.zeros(batch, self.cin, self.kt - 1, n_freq, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, Cin, T, F]``, ``buf [B, Cin, kt-1, F]`` -> ``(y [B, Cout, T, F'], buf')``."""
        if self.kt == 1:
            return self.conv(x), buf
        xx = torch.cat([buf, x], dim=2)
        return self.conv(xx), xx[:, :, -(self.kt - 1) :]


def _checked_preset(emb_dim: int, personalized: bool, injection: str, size: str, preset: Preset | None) -> Preset:
    """The preset of ``size`` (or ``preset``) after checking the constructor's arguments."""
    if preset is None:
        if size not in PRESETS:
            raise ValueError(f"pse.size={size!r} is not allowed; choices: {', '.join(PRESETS)}")
        preset = PRESETS[size]
    if injection not in ("join", "encoder", "decoder"):
        raise ValueError(f"pse.injection={injection!r}; choices: join, encoder, decoder")
    if personalized and emb_dim <= 0:
        raise ValueError(f"a personalized model needs emb_dim > 0, got {emb_dim}")
    if preset.n_fft != 2 * preset.hop:
        raise ValueError("only 50 % overlap (n_fft == 2 * hop) is supported")
    if preset.nb_erb % 4 or preset.nb_df % 4:
        raise ValueError("nb_erb and nb_df must be multiples of 4")
    return preset


class PDFNet2(PSEModel):
    """Personalized DeepFilterNet2-style model; see the module docstring for the signal path.

    ``forward(mixture [B, T], emb [B, D] | None) -> enhanced [B, T]`` (delayed by
    ``latency_samples``). A personalized model given ``emb=None`` uses a zero embedding; a
    non-personalized model ignores ``emb``.
    """

    def __init__(
        self,
        emb_dim: int = 0,
        personalized: bool = True,
        injection: str = "join",
        size: str = "cpu",
        preset: Preset | None = None,
    ) -> None:
        super().__init__()
        p = _checked_preset(emb_dim, personalized, injection, size, preset)
        self.preset = p
        self.size = size
        self.personalized = bool(personalized)
        self.emb_dim = int(emb_dim) if personalized else 0
        self.injection = injection
        self.hop = p.hop
        self.n_fft = p.n_fft
        self.latency_samples = p.n_fft - p.hop
        self.n_freqs = p.n_fft // 2 + 1

        win = torch.hann_window(p.n_fft, periodic=True).sqrt()
        self.register_buffer("window", win, persistent=False)
        avg, assign = erb_matrices(p.n_fft, p.nb_erb)
        self.register_buffer("erb_avg", avg, persistent=False)
        self.register_buffer("erb_assign", assign, persistent=False)
        # submodules in this order (it is the parameters' init order and the state dict's)
        self._build_encoders(p, injection)
        self._build_decoders(p)

    def _build_encoders(self, p: Preset, injection: str) -> None:
        """ERB and DF encoders, the embedding's projection and injection, the GRU."""
        c, h = p.conv_ch, p.hidden
        # ERB encoder: nb -> nb -> nb/2 -> nb/4 -> nb/4
        self.erb_enc = nn.ModuleList(
            [
                CausalConv(1, c, p.kt_first),
                CausalConv(c, c, p.kt, stride_f=2),
                CausalConv(c, c, p.kt, stride_f=2),
                CausalConv(c, c, 1),
            ]
        )
        # DF encoder: nb_df -> nb_df -> nb_df/2 -> nb_df/4
        self.df_enc = nn.ModuleList(
            [
                CausalConv(2, c, p.kt_first),
                CausalConv(c, c, p.kt, stride_f=2),
                CausalConv(c, c, 1, stride_f=2),
            ]
        )
        self.erb_lin = nn.Linear(c * p.nb_erb // 4, h)
        self.df_lin = nn.Linear(c * p.nb_df // 4, h)

        pe = p.emb_proj
        if self.personalized:
            self.emb_proj = nn.Sequential(nn.Linear(self.emb_dim, pe), nn.ReLU())
            if injection == "join":
                self.join = nn.Linear(h + pe, h)
            elif injection == "encoder":
                self.film = nn.Linear(pe, 2 * c)
            else:
                self.dec_join = nn.Linear(h + pe, h)

        self.gru = nn.GRU(h, h, num_layers=p.gru_layers, batch_first=True)

    def _build_decoders(self, p: Preset) -> None:
        """ERB decoder (skips from the ERB encoder) and DF decoder."""
        c, h = p.conv_ch, p.hidden
        # ERB decoder with skips from the ERB encoder.
        self.dec_lin = nn.Linear(h, c * p.nb_erb // 4)
        self.skip = nn.ModuleList([nn.Conv2d(c, c, 1) for _ in range(4)])
        self.dec3 = nn.Conv2d(c, c, (1, 3), padding=(0, 1))
        self.dec2 = nn.ConvTranspose2d(c, c, (1, 4), stride=(1, 2), padding=(0, 1))
        self.dec1 = nn.ConvTranspose2d(c, c, (1, 4), stride=(1, 2), padding=(0, 1))
        self.dec0 = nn.Conv2d(c, 1, (1, 3), padding=(0, 1))

        # DF decoder.
        self.df_gru = (
            nn.GRU(h, h, num_layers=p.df_gru_layers, batch_first=True) if p.df_gru_layers else None
        )
        self.df_out = nn.Linear(h, p.nb_df * p.df_order * 2)
        self.df_skip = nn.Conv2d(c, p.df_order * 2, 1)
        # The deep filter is a residual correction of the ERB-gained low band, zero at init, so
        # training starts from the ERB-gain path instead of a random filter over the speech band.
        for m in (self.df_out, self.df_skip):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ state
    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """Zero state: STFT buffers, conv time buffers, GRU hiddens, DF past frames."""
        p = self.preset
        dt = self.window.dtype
        dev = torch.device(device)
        b = batch_size
        erb_f = [p.nb_erb, p.nb_erb, p.nb_erb // 2, p.nb_erb // 4]
        df_f = [p.nb_df, p.nb_df, p.nb_df // 2]
        return {
            "in": torch.zeros(b, self.n_fft - self.hop, device=dev, dtype=dt),
            "ola": torch.zeros(b, self.n_fft - self.hop, device=dev, dtype=dt),
            "erb_conv": [m.init_buf(b, f, dev, dt) for m, f in zip(self.erb_enc, erb_f, strict=True)],
            "df_conv": [m.init_buf(b, f, dev, dt) for m, f in zip(self.df_enc, df_f, strict=True)],
            "gru": torch.zeros(p.gru_layers, b, p.hidden, device=dev, dtype=dt),
            "df_gru": torch.zeros(max(p.df_gru_layers, 1), b, p.hidden, device=dev, dtype=dt),
            "df_buf": torch.zeros(b, p.df_order - 1, p.nb_df, 2, device=dev, dtype=dt),
        }

    # ------------------------------------------------------------------ API
    def forward(self, mixture: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """``mixture [B, T]``, ``emb [B, D] | None`` -> ``enhanced [B, T]`` (delayed by latency)."""
        self.check_wave(mixture)
        b, t = mixture.shape
        self.check_emb(emb, b)
        pad = (-t) % self.hop
        x = F.pad(mixture, (0, pad)) if pad else mixture
        out, _ = self._run(x, emb, self.init_state(b, mixture.device))
        return out[:, :t]

    def step(
        self, block: torch.Tensor, emb: torch.Tensor | None, state: State
    ) -> tuple[torch.Tensor, State]:
        """``block [B, Tb]`` (``Tb % hop == 0``), ``emb [B, D] | None`` -> ``(out [B, Tb], state)``."""
        self.check_block(block)
        self.check_emb(emb, block.shape[0])
        if state["in"].shape[0] != block.shape[0]:
            raise ValueError(
                f"state is for batch {state['in'].shape[0]}, block has batch {block.shape[0]}"
            )
        return self._run(block, emb, state)

    # ------------------------------------------------------------------ internals
    def _run(self, x: torch.Tensor, emb: torch.Tensor | None, state: State) -> tuple[torch.Tensor, State]:
        """``x [B, n·hop]`` -> ``(out [B, n·hop], new_state)``; shared by forward and step."""
        b, t = x.shape
        n = t // self.hop
        xx = torch.cat([state["in"].to(x.dtype), x], dim=1)
        frames = xx.unfold(1, self.n_fft, self.hop) * self.window  # [B, n, n_fft]
        spec = torch.view_as_real(torch.fft.rfft(frames, dim=-1))  # [B, n, F, 2]
        spec_out, core_state = self._core(spec, emb, state)
        y = torch.fft.irfft(torch.view_as_complex(spec_out.contiguous()), n=self.n_fft, dim=-1)
        y = y * self.window  # [B, n, n_fft]
        # Overlap-add (50 % overlap): positions [k·hop, k·hop + n_fft) of the padded timeline.
        first, second = y[..., : self.hop], y[..., self.hop :]
        ola = state["ola"].to(y.dtype)
        out = first.clone()
        out[:, 0] = out[:, 0] + ola
        if n > 1:
            out[:, 1:] = out[:, 1:] + second[:, :-1]
        new_state = dict(core_state)
        new_state["in"] = xx[:, -(self.n_fft - self.hop) :]
        new_state["ola"] = second[:, -1]
        return out.reshape(b, t), new_state

    def _speaker(self, emb: torch.Tensor | None, b: int, ref: torch.Tensor) -> torch.Tensor | None:
        if not self.personalized:
            return None
        if emb is None:
            emb = ref.new_zeros(b, self.emb_dim)
        return self.emb_proj(emb.to(ref.dtype) * math.sqrt(self.emb_dim))  # [B, P]

    def _core(self, spec: torch.Tensor, emb: torch.Tensor | None, state: State) -> tuple[torch.Tensor, State]:
        """``spec [B, T, F, 2]`` -> ``(enhanced spec [B, T, F, 2], state)``."""
        p = self.preset
        b, t = spec.shape[:2]
        spk = self._speaker(emb, b, spec)
        # Features.
        power = spec.pow(2).sum(-1)  # [B, T, F]
        erb = power @ self.erb_avg  # [B, T, nb]
        feat_erb = ((10.0 * torch.log10(erb + 1e-10) + 10.0) / 40.0).unsqueeze(1)  # [B,1,T,nb]
        low = spec[:, :, : p.nb_df]  # [B, T, nb_df, 2]
        mag = low.pow(2).sum(-1, keepdim=True).add(1e-12).sqrt()
        feat_df = (low * mag.pow(-0.5)).permute(0, 3, 1, 2)  # [B, 2, T, nb_df]

        # ERB encoder.
        erb_bufs, df_bufs = [], []
        skips = []
        h = feat_erb
        for i, conv in enumerate(self.erb_enc):
            h, nb = conv(h, state["erb_conv"][i])
            h = F.relu(h)
            if i == 0 and spk is not None and self.injection == "encoder":
                gamma, beta = self.film(spk).chunk(2, dim=-1)  # [B, C]
                h = h * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]
            erb_bufs.append(nb)
            skips.append(h)
        e3 = h  # [B, C, T, nb/4]
        # DF encoder.
        g = feat_df
        c0 = None
        for i, conv in enumerate(self.df_enc):
            g, nb = conv(g, state["df_conv"][i])
            g = F.relu(g)
            df_bufs.append(nb)
            if i == 0:
                c0 = g  # [B, C, T, nb_df]
        flat_e = e3.permute(0, 2, 1, 3).reshape(b, t, -1)
        flat_d = g.permute(0, 2, 1, 3).reshape(b, t, -1)
        z = F.relu(self.erb_lin(flat_e) + self.df_lin(flat_d))  # [B, T, H]
        if spk is not None and self.injection == "join":
            z = F.relu(self.join(torch.cat([z, spk[:, None].expand(b, t, -1)], dim=-1)))
        z, h_gru = self.gru(z, state["gru"])
        if spk is not None and self.injection == "decoder":
            z = F.relu(self.dec_join(torch.cat([z, spk[:, None].expand(b, t, -1)], dim=-1)))

        # ERB decoder -> gains.
        d = F.relu(self.dec_lin(z)).reshape(b, t, -1, p.nb_erb // 4).permute(0, 2, 1, 3)
        d = F.relu(self.dec3(d + self.skip[3](skips[3])))
        d = F.relu(self.dec2(d + self.skip[2](skips[2])))
        d = F.relu(self.dec1(d + self.skip[1](skips[1])))
        gains = torch.sigmoid(self.dec0(d + self.skip[0](skips[0]))).squeeze(1)  # [B, T, nb]
        spec_m = spec * (gains @ self.erb_assign).unsqueeze(-1)  # [B, T, F, 2]

        # DF decoder -> coefficients [B, T, nb_df, order, 2].
        if self.df_gru is not None:
            zd, h_df = self.df_gru(z, state["df_gru"])
        else:
            zd, h_df = z, state["df_gru"]
        coef = self.df_out(zd).reshape(b, t, p.nb_df, p.df_order * 2)
        coef = coef + self.df_skip(c0).permute(0, 2, 3, 1)
        coef = torch.tanh(coef).reshape(b, t, p.nb_df, p.df_order, 2)
        low_m = spec_m[:, :, : p.nb_df]  # [B, T, nb_df, 2]
        padded = torch.cat([state["df_buf"].to(low_m.dtype), low_m], dim=1)  # [B, o-1+T, nb_df, 2]
        win = padded.unfold(1, p.df_order, 1)  # [B, T, nb_df, 2, order]; last = current frame
        xr, xi = win[:, :, :, 0], win[:, :, :, 1]  # [B, T, nb_df, order]
        cr, ci = coef[..., 0], coef[..., 1]
        yr = (xr * cr - xi * ci).sum(-1)
        yi = (xr * ci + xi * cr).sum(-1)
        low_out = low_m + torch.stack([yr, yi], dim=-1)
        spec_out = torch.cat([low_out, spec_m[:, :, p.nb_df :]], dim=2)
        new_state = {
            "erb_conv": erb_bufs,
            "df_conv": df_bufs,
            "gru": h_gru,
            "df_gru": h_df,
            "df_buf": padded[:, -(p.df_order - 1) :] if p.df_order > 1 else state["df_buf"],
        }
        return spec_out, new_state


@register("pse", "pdfnet2")
def make_pdfnet2(cfg: PSEConfig, emb_dim: int) -> PDFNet2:
    """Factory: ``(cfg: PSEConfig, emb_dim) -> PDFNet2`` (size ``cfg.size``, ``cfg.injection``)."""
    return PDFNet2(
        emb_dim=emb_dim if cfg.personalized else 0,
        personalized=cfg.personalized,
        injection=cfg.injection,
        size=cfg.size,
    )


make_pdfnet2.sizes = tuple(PRESETS)  # type: ignore[attr-defined]  (read by config validation)
make_pdfnet2.injections = ("join", "encoder", "decoder")  # type: ignore[attr-defined]
