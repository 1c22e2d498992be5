"""Parameters of the cramp detector (one frozen dataclass, loadable from ``[detector]`` TOML)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from cramp_signal.errors import ConfigurationError


@dataclass(frozen=True)
class DetectorConfig:
    """Every tunable of :class:`~cramp_signal.detector.CrampDetector` and why its default.

    Conditioning
    ------------
    band_low_hz : 20.0
        High-pass corner: removes motion artefact and baseline wander and most ECG
        energy (De Luca et al. 2010; Drake & Callaghan 2006).
    band_high_hz : 450.0
        Low-pass corner (SENIAM: sEMG energy lies below ~450-500 Hz); clamped to
        ``band_max_fraction`` of Nyquist at low rates (112.5 Hz at 250 Hz).
    band_order : 3
        Butterworth order per edge: 18 dB/octave keeps ECG below the corner out
        while costing only three biquads per sample.
    band_max_fraction : 0.9
        Largest upper edge as a fraction of Nyquist.
    mains_detect : True
        Look for 50/60 Hz mains lines and notch them once found.
    mains_candidates_hz : (50.0, 60.0)
        The two mains frequencies in the world.
    mains_harmonics : 3
        Harmonics considered (50/100/150 or 60/120/180 Hz); higher ones carry
        little power after the band-pass and each notch costs a biquad per sample.
    mains_line_ratio : 10.0
        A line must have 10 dB more power than its +-4..8 Hz neighbourhood.
    mains_notch_q : 10.0
        Notch quality factor: 5 Hz wide at 50 Hz (15 Hz at 150 Hz), the three
        notches remove ~7 % of a white 20-450 Hz band.  A sharper notch rings
        longer after a spike (time constant ~ Q / (pi f0)): at Q = 30 a 190-uV
        fasciculation potential leaves a 50-Hz tail of 2-13 uV for 200 ms, which
        bridged prelude spikes into one candidate; at Q = 10 the tail is < 2 uV
        after 0.1 s.  On the tuning nights (seeds 100-119, 8 h) Q 30 -> 10 took
        the median |onset error| from 38 to 30 ms and its p95 from 252 to 140 ms
        with the same detections; it also tolerates grid-frequency drift.
    mains_check_s : 5.0
        Seconds between mains checks (on the last complete 1-s block) until a line
        is found; short enough to catch a mains burst, rare enough to stay cheap.

    Envelope and noise floor
    ------------------------
    frame_s : 0.005
        Frame length of the envelope (energy per 5 ms); onset resolution.
    fast_window_s : 0.05
        Moving-RMS window of the envelope (Solnik et al. 2010 use 25-50 ms for
        onsets): short for latency, long enough to average ~50-100 samples.
    floor_init_s : 0.25
        The noise floor is first estimated from this much signal (public labelled
        sets have bursts from 0.43 s on): the median of the envelope, and its peak
        standing in for the 99th percentile (too few independent values yet).
    floor_fall : 0.5
        Per 1-s block, weight of a lower block median (fast fall: a floor first
        estimated during activity drops within seconds).
    floor_rise : 0.05
        Per 1-s block, weight of a higher block median (20-s time constant); only
        blocks that are at least half idle and of good quality update the floor, so
        it does not climb during long contractions.  During warm-up the n-th update
        rises with weight max(1/n, 0.05) (a running mean of the first blocks), so a
        crude first estimate is corrected within seconds (at 250 Hz it opened
        candidates on noise in the first seconds).
    min_floor_uv : 1e-6
        Lower bound of the floor (avoid a zero threshold on a flat line).

    Activity detection (double threshold, Bonato et al. 1998)
    ---------------------------------------------------------
    on_ratio : 1.8
        Onset threshold = floor x 1.8.  The weakest labelled bursts (SNR 5) are
        2.2-2.5 x rest RMS; 50-ms noise RMS rarely exceeds 1.5 x its median.
    off_ratio : 1.4
        Release threshold (hysteresis) = floor x 1.4.
    noise_peak_percentile : 99.0
        The resting envelope's 99th percentile is tracked like the floor.  With
        Gaussian noise it is ~1.3 x the median; with ECG residue (QRS complexes
        fill only ~5-8 % of the time) it reaches the QRS envelope peak ...
    peak_on_ratio : 1.3
        ... and the onset threshold is at least 1.3 x that percentile, so heart
        beats do not open episodes (an ECG-aware form of Bonato's noise-derived
        threshold).
    peak_off_ratio : 1.0
        Release threshold is at least the resting 99th percentile.
    noise_young_s : 1.0
        Frames of a candidate younger than 1 s still feed the noise statistics
        (otherwise heart beats that open short candidates would never be learnt
        as background); longer activity never does.
    onset_hold_s : 0.09
        Second threshold: the envelope must be above the onset threshold now and
        above the hold threshold (below) in ...
    onset_hold_fraction : 0.8
        ... at least 80 % of the frames of the last 90 ms, i.e. 75 ms: longer than
        the 50-ms RMS window, so one isolated spike (a fasciculation, an ECG
        residue), which keeps the envelope up for one window length, never opens
        an episode.
    onset_hold_level : 0.5
        The hold threshold, between the release (0) and the onset threshold (1).
        Below 1, a slowly rising contraction has served part of its hold before it
        reaches the onset threshold: on 200 short tuning nights (seeds 3000-3199,
        160 cramps) the p95 ``spasm_onset`` latency went from 301 ms (1.0) to
        286 ms (0.5) and 276 ms (0.0), the low-SNR cramps with 0.4-0.8-s ramps being
        the slow ones; 0.0 opened candidates on noise in the first seconds at
        250 Hz (20 min of white noise: 4 at 0.0, 1 at 0.5, 0 at 1.0).
    cusum_h : 20.0
        A second way to open a candidate from idle, for slow, weak recruitment
        ramps: Page's CUSUM (Page 1954) of the 5-ms frame energies ``e`` in units of
        a resting power ``R``, ``S_k = max(0, S_{k-1} + min(e_k / R, clip) - drift)``,
        opens a candidate at a frame above the release threshold where ``S > 20``,
        without waiting for the onset threshold and its hold.  Tuned on seeds
        100-119 (2 h) and 1000-1299 (0.5 h), 268 cramps in 190 h: ``spasm_onset``
        latency median / p95 125 / 266 ms -> 102 / 236 ms with the same detections,
        3 % more candidates cleared, and no more onsets in 3 x 20 min of white noise
        (2 at 250 Hz, 0 at 1 and 2 kHz); at 12 the p95 was 203 ms but 5 times as
        many candidates were cleared and white noise at 250 Hz opened 43.  Checked
        once on seeds 7000-7099 (96 cramps): p95 290 -> 270 ms.  0 turns it off.
    cusum_drift : 1.4
        ... ``drift`` (in units of ``R``) is subtracted per frame, so resting
        frames pull ``S`` back to 0 ...
    cusum_clip : 3.0
        ... and one frame adds at most ``clip - drift`` = 1.6: at least 13 frames
        (65 ms) of sustained power, never a single spike or QRS residue, open one.
    cusum_memory_s : 0.3
        ``S`` is computed over the last 0.3 s only (a function of a fixed window,
        so the stream's chunking cannot change it, and old evidence does not
        linger).
    cusum_peak_ratio : 0.7
        ``R = max(floor, 0.7 x resting 99th percentile)**2``: with ECG residue the
        percentile is high and ``R`` follows it, so heart beats do not add up.  The
        CUSUM starts after the first noise update, not on the crude first floor.
    onset_lookback_s : 0.5
        Onset refinement searches this far back (likelihood-ratio change point on
        the frame energies, Staude et al. 2001).
    onset_backtrack_s : 0.05
        After the change point, step back over frames still above the resting
        power (at most 50 ms): the first, weak part of the recruitment ramp.  Then
        the rising edge is extrapolated back to the resting level (again at most
        50 ms): a fitted line through the excess amplitude of the frames ...
    onset_edge_min : 0.5
        ... at least 0.5 x the resting RMS above rest ...
    onset_edge_fraction : 0.5
        ... up to the first frame at half the window's peak.  Tuned on 213 onsets
        of 300 short simulated nights (seeds 1000-1299) and the 49 detected bursts of
        the public simulated_onsets set: median |onset error| 37 -> 22 ms and
        29 -> 25 ms; varying either value by +-0.1..0.3 changes those by < 5 ms.
    clear_relax_s : 0.3
        An unconfirmed candidate is cleared after this long below the release
        threshold (short voluntary bursts 0.3-2 s apart stay separate).
    restart_pause_s : 0.1
        A pause this long (below the release threshold) inside an unconfirmed
        candidate restarts it: confirmation needs ``confirm_s`` of activity without
        such a pause, and the onset is re-anchored where the onset criterion is met
        again (``cramp_confirmed`` then carries the new onset; what came before the
        pause, e.g. fasciculation spikes whose 50-ms RMS and notch ringing bridge the
        gaps between them, is reported as ``prelude_s``).  Shorter than
        ``clear_relax_s``, so short bursts 0.1-0.3 s apart still form one candidate
        but never add up to a cramp; longer than the troughs of a waxing/waning
        cramp plateau, which stay above the release threshold.
    end_relax_s : 2.0
        A confirmed cramp ends when the envelope was below the release threshold in
        ``end_quiet_fraction`` of the frames of the last 2 s (and is now), so a
        waxing/waning plateau is one cramp ...
    end_quiet_fraction : 0.8
        ... and heart beats do not keep a cramp open: the QRS residue crosses the
        resting 99th percentile (part of the release threshold) about once a
        second for 50-100 ms, so a strict 2-s run below it may never come (on a
        held-out night a 19-s cramp stayed open for 15 min that way).
    confirm_s : 12.0
        Sustained activity needed to confirm a cramp.  AASM leg movements (PLM)
        last 0.5-10 s, and voluntary isometric efforts in the public set last 10 s,
        so 12 s keeps both out with margin while cramps last tens of seconds.

    Prelude (fasciculations before a cramp)
    ---------------------------------------
    prelude_window_s : 5.0
        Window before an onset searched for isolated spikes.
    prelude_min_spikes : 3
        At least this many spikes make a ``prelude`` event.
    prelude_spike_max_s : 0.5
        A cleared candidate whose activity (``duration_s``, from its possibly
        re-anchored onset) was shorter than this counts as one prelude spike at
        its first onset: fasciculation twitches close together (or bridged by
        their 50-ms RMS) satisfy the onset hold and open candidates of 0.07-0.4 s
        that clear (simulated night seed 14: 13 such candidates in the 24 s before
        a cramp, and no prelude was reported).  0.5 s is the shortest AASM leg
        movement, so a PLM or a voluntary burst does not count (nor does it hide
        the spikes before it); 0 counts no candidate.

    Signal quality
    --------------
    saturation_uv : 16000.0
        Samples at or beyond +-16000 uV are at the +-16384 uV rail (saturated).
    pop_step_uv : 5000.0
        A sample-to-sample raw jump larger than 5 mV is an electrode pop: surface
        EMG amplitudes stay below ~5 mV peak (the public 250-Hz TA recording has
        2-mV steps inside real bursts).
    lead_off_rms_uv : 0.005
        A frame whose 50-ms envelope is below this is flat (lead-off); any connected
        electrode shows at least amplifier noise.  Absolute, so it also works before
        the noise floor is known ...
    lead_off_floor_ratio : 0.01
        ... and a frame 40 dB below the noise floor is flat too (unit-free: the
        band sends a constant when its lead-off detector trips, and the band-passed
        constant decays through this within ~0.15 s, before the floor learns it).
        A second with a flat frame is ``lead_off`` and never updates the floor.
    artefact_guard_s : 0.2
        No onset is declared within 200 ms after a pop/saturation/gap frame (the
        band-pass rings for ~1/20 Hz).

    Accelerometer
    -------------
    still_acc_g : 0.02
        Dynamic acceleration (RMS over a second, all axes) below this is "still".
    posture_change_deg : 30.0
        Rotation of the gravity vector between seconds above this is a posture change.
    motion_fraction : 0.5
        A candidate whose limb moved (dynamic acceleration >= ``still_acc_g``) in at
        least half of its seconds ...
    motion_min_intensity : 20.0
        ... is confirmed only once its mean RMS is >= 20 x the floor: sustained
        activity on a moving limb may be motion artefact or post-cramp stretching
        (on a check night, seed 37, a 13-s stretch with 50-300-uV motion artefact
        was confirmed at 11.6 x).  Cramps seen so far leave the limb still, and a
        contraction that strong is confirmed whatever the limb does, so clear EMG
        evidence is never vetoed; without accelerometer nothing changes.

    Severity grade (on ``cramp_end``)
    ---------------------------------
    severe_duration_s : 120.0, moderate_duration_s : 30.0,
    severe_intensity : 30.0, moderate_intensity : 10.0
        Grade 3 if duration >= 120 s or intensity >= 30 x baseline; grade 2 if
        duration >= 30 s or intensity >= 10 x; else 1 (no clinical standard exists;
        nocturnal cramps last seconds to minutes, Allen & Kirby 2012).
    """

    band_low_hz: float = 20.0
    band_high_hz: float = 450.0
    band_order: int = 3
    band_max_fraction: float = 0.9
    mains_detect: bool = True
    mains_candidates_hz: tuple[float, ...] = (50.0, 60.0)
    mains_harmonics: int = 3
    mains_line_ratio: float = 10.0
    mains_notch_q: float = 10.0
    mains_check_s: float = 5.0
    frame_s: float = 0.005
    fast_window_s: float = 0.05
    floor_init_s: float = 0.25
    floor_fall: float = 0.5
    floor_rise: float = 0.05
    min_floor_uv: float = 1e-6
    on_ratio: float = 1.8
    off_ratio: float = 1.4
    noise_peak_percentile: float = 99.0
    peak_on_ratio: float = 1.3
    peak_off_ratio: float = 1.0
    noise_young_s: float = 1.0
    onset_hold_s: float = 0.09
    onset_hold_fraction: float = 0.8
    onset_hold_level: float = 0.5
    cusum_h: float = 20.0
    cusum_drift: float = 1.4
    cusum_clip: float = 3.0
    cusum_memory_s: float = 0.3
    cusum_peak_ratio: float = 0.7
    onset_lookback_s: float = 0.5
    onset_backtrack_s: float = 0.05
    onset_edge_min: float = 0.5
    onset_edge_fraction: float = 0.5
    clear_relax_s: float = 0.3
    restart_pause_s: float = 0.1
    end_relax_s: float = 2.0
    end_quiet_fraction: float = 0.8
    confirm_s: float = 12.0
    prelude_window_s: float = 5.0
    prelude_min_spikes: int = 3
    prelude_spike_max_s: float = 0.5
    saturation_uv: float = 16000.0
    pop_step_uv: float = 5000.0
    lead_off_rms_uv: float = 0.005
    lead_off_floor_ratio: float = 0.01
    artefact_guard_s: float = 0.2
    still_acc_g: float = 0.02
    posture_change_deg: float = 30.0
    motion_fraction: float = 0.5
    motion_min_intensity: float = 20.0
    severe_duration_s: float = 120.0
    moderate_duration_s: float = 30.0
    severe_intensity: float = 30.0
    moderate_intensity: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigurationError(f"{f.name} must be finite, got {value!r}")
        positive = (
            "band_low_hz", "band_high_hz", "band_max_fraction", "mains_line_ratio",
            "mains_notch_q", "mains_check_s", "frame_s", "fast_window_s", "floor_init_s",
            "min_floor_uv", "onset_hold_s", "onset_lookback_s", "clear_relax_s",
            "end_relax_s", "confirm_s", "prelude_window_s", "saturation_uv", "pop_step_uv",
            "still_acc_g", "posture_change_deg",
        )  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.band_low_hz >= self.band_high_hz:
            raise ConfigurationError("band_low_hz must be below band_high_hz")
        if self.band_max_fraction >= 1.0:
            raise ConfigurationError("band_max_fraction must be below 1 (Nyquist)")
        if self.band_order < 1 or self.mains_harmonics < 1 or self.prelude_min_spikes < 1:
            raise ConfigurationError("band_order, mains_harmonics, prelude_min_spikes must be >= 1")
        if not 50.0 <= self.noise_peak_percentile <= 100.0:
            raise ConfigurationError("noise_peak_percentile must be in [50, 100]")
        if not 0.0 < self.peak_off_ratio <= self.peak_on_ratio:
            raise ConfigurationError("need 0 < peak_off_ratio <= peak_on_ratio")
        if self.noise_young_s < 0 or self.prelude_spike_max_s < 0:
            raise ConfigurationError("noise_young_s and prelude_spike_max_s must be >= 0")
        if self.onset_backtrack_s < 0 or self.onset_edge_min < 0:
            raise ConfigurationError("onset_backtrack_s and onset_edge_min must be >= 0")
        if not 0.0 < self.onset_edge_fraction <= 1.0:
            raise ConfigurationError("onset_edge_fraction must be in (0, 1]")
        if not 1.0 < self.off_ratio <= self.on_ratio:
            raise ConfigurationError("need 1 < off_ratio <= on_ratio (hysteresis)")
        if not 0.0 < self.onset_hold_fraction <= 1.0:
            raise ConfigurationError("onset_hold_fraction must be in (0, 1]")
        if not 0.0 <= self.onset_hold_level <= 1.0:
            raise ConfigurationError("onset_hold_level must be in [0, 1]")
        if self.cusum_h < 0 or not 0 < self.cusum_drift < self.cusum_clip:
            raise ConfigurationError("need cusum_h >= 0 and 0 < cusum_drift < cusum_clip")
        if self.cusum_memory_s <= 0 or self.cusum_peak_ratio <= 0:
            raise ConfigurationError("cusum_memory_s and cusum_peak_ratio must be > 0")
        if not (0.0 < self.floor_fall <= 1.0 and 0.0 <= self.floor_rise <= 1.0):
            raise ConfigurationError("floor_fall must be in (0, 1], floor_rise in [0, 1]")
        if min(self.lead_off_rms_uv, self.lead_off_floor_ratio, self.artefact_guard_s) < 0:
            raise ConfigurationError(
                "lead_off_rms_uv, lead_off_floor_ratio and artefact_guard_s must be >= 0"
            )
        if self.lead_off_floor_ratio >= 1.0:
            raise ConfigurationError("lead_off_floor_ratio must be below 1")
        if not self.clear_relax_s <= self.end_relax_s <= self.confirm_s:
            raise ConfigurationError("need clear_relax_s <= end_relax_s <= confirm_s")
        if not 0.0 < self.motion_fraction <= 1.0 or self.motion_min_intensity < 0:
            raise ConfigurationError("need 0 < motion_fraction <= 1, motion_min_intensity >= 0")
        if not 0.0 < self.end_quiet_fraction <= 1.0:
            raise ConfigurationError("end_quiet_fraction must be in (0, 1]")
        if not 0.0 < self.restart_pause_s <= self.clear_relax_s:
            raise ConfigurationError("need 0 < restart_pause_s <= clear_relax_s")
        if not (
            self.moderate_duration_s <= self.severe_duration_s
            and self.moderate_intensity <= self.severe_intensity
        ):
            raise ConfigurationError("moderate severity limits must not exceed severe ones")
        if any(not f > 0 for f in self.mains_candidates_hz):
            raise ConfigurationError("mains_candidates_hz must be positive")
