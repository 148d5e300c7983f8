"""Synthetic STEM frames for trying beamwatch without a microscope: a crystal lattice imaged frame
after frame while a disordered (amorphous) region grows in it. numpy only."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from .wire import dose_per_frame_e_per_a2, ELEMENTARY_CHARGE_C


def electrons_per_px(beam_current_pa: float, dwell_time_us: float) -> float:
    """Electrons landing on one scan pixel per frame: I · t / e."""
    return beam_current_pa * 1e-12 * dwell_time_us * 1e-6 / ELEMENTARY_CHARGE_C


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], sigma_px: float) -> np.ndarray:
    """White noise low-passed with a Gaussian of ``sigma_px`` (through the FFT), zero mean, unit std."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fx * fx + fy * fy))
    s = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    return (s - s.mean()) / (s.std() + 1e-12)


class DamagedLattice:
    """A lattice of atom columns whose disordered region grows with dose.

    ``shape`` (rows, cols) of each frame; ``spacing_px`` the lattice spacing; damage nucleates at
    ``onset_frame`` at ``centre`` (default: a random point away from the edges) and its radius
    approaches ``max_radius_fraction`` × the frame's smaller side with a time constant of
    ``growth_frames``. ``beam_current_pa`` and ``dwell_time_us`` set the electrons per pixel and so
    the shot noise (each frame is Poisson-distributed counts). Same ``seed``, same frames.
    """

    def __init__(
        self,
        shape: Sequence[int] = (256, 256),
        frames: int = 30,
        onset_frame: int = 10,
        spacing_px: float = 9.0,
        max_radius_fraction: float = 0.3,
        growth_frames: float = 6.0,
        beam_current_pa: float = 5.0,
        dwell_time_us: float = 2.0,
        pixel_size_a: float = 0.5,
        centre: Optional[Tuple[float, float]] = None,
        seed: int = 0,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.frames = int(frames)
        self.onset_frame = int(onset_frame)
        self.max_radius_px = max_radius_fraction * min(self.shape)
        self.growth_frames = float(growth_frames)
        self.beam_current_pa = float(beam_current_pa)
        self.dwell_time_us = float(dwell_time_us)
        self.pixel_size_a = float(pixel_size_a)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        h, w = self.shape
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        # Atom columns: sharp peaks of a product of cosines; each column's brightness varies
        # (fixed per seed) so the image is not perfectly periodic and drift has one answer.
        a = float(spacing_px)
        peaks = (((1 + np.cos(2 * np.pi * x / a)) / 2) * ((1 + np.cos(2 * np.pi * y / a)) / 2)) ** 3
        sites = 0.75 + 0.5 * rng.random((int(h / a) + 2, int(w / a) + 2))
        site = sites[np.floor(y / a + 0.5).astype(int), np.floor(x / a + 0.5).astype(int)]
        crystal = 0.15 + 0.85 * peaks * site
        # Amorphous material: smooth disorder with the crystal's mean and spread.
        amorphous = crystal.mean() + crystal.std() * 0.6 * _smooth_noise(rng, self.shape, a / 4)
        self._crystal = crystal
        self._amorphous = np.clip(amorphous, 0.02, None)
        if centre is None:
            margin = 0.3
            centre = (h * (margin + (1 - 2 * margin) * rng.random()), w * (margin + (1 - 2 * margin) * rng.random()))
        self.centre = centre
        self._r = np.hypot(y - centre[0], x - centre[1])

    @property
    def electrons_per_px(self) -> float:
        return electrons_per_px(self.beam_current_pa, self.dwell_time_us)

    @property
    def dose_per_frame_e_per_a2(self) -> float:
        return dose_per_frame_e_per_a2(self.beam_current_pa, self.dwell_time_us, self.pixel_size_a)

    def radius_px(self, i: int) -> float:
        """Radius of the damaged region in frame ``i`` (0 before the onset)."""
        if i < self.onset_frame:
            return 0.0
        return self.max_radius_px * (1 - np.exp(-(i - self.onset_frame + 1) / self.growth_frames))

    def damage_map(self, i: int) -> np.ndarray:
        """Share of disorder per pixel in frame ``i`` (0 crystal … 1 amorphous), soft-edged."""
        r = self.radius_px(i)
        if r <= 0:
            return np.zeros(self.shape)
        return np.clip((r - self._r) / 2.0 + 0.5, 0.0, 1.0)

    def frame(self, i: int, dtype: "np.typing.DTypeLike" = np.uint16) -> np.ndarray:
        """Frame ``i``: Poisson counts of the electrons scattered into the detector, as ``dtype``
        (counts are kept below the type's maximum, which beamwatch reads as a detector gap)."""
        m = self.damage_map(i)
        image = (1 - m) * self._crystal + m * self._amorphous
        rng = np.random.default_rng([self.seed, i])
        counts = rng.poisson(self.electrons_per_px * image)
        dt = np.dtype(dtype)
        if dt.kind in "ui":
            counts = np.clip(counts, 0, np.iinfo(dt).max - 1)
        return counts.astype(dt)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.frames):
            yield self.frame(i)
