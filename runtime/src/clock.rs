//! The clock edge: `Clock` gives the runtime monotonic and wall time;
//! `TokioClock` reads tokio's clock (virtualised by madsim), `SkewedClock`
//! adds a per-node offset, drift and jumps for tests and the simulation, and
//! `ManualClock` is moved by hand in unit tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::rng::SplitMix64;

/// Drift is given in parts per million of elapsed time; 100_000 is +10%.
pub const DRIFT_PPM_ONE: i64 = 1_000_000;
/// Largest drift magnitude accepted: time must keep moving forward.
pub const DRIFT_PPM_MAX: i64 = 500_000;

/// Where the runtime reads time. The core never reads it: the Raft actor
/// hands `now_ms()` to the core with every tick.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds on a monotonic clock (arbitrary epoch); never decreases.
    /// Lease and election timing use only this.
    fn now_ms(&self) -> u64;
    /// Milliseconds since the Unix epoch. May jump either way: for display,
    /// logs and wire timestamps only, never for measuring durations.
    fn wall_ms(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
    fn wall_ms(&self) -> u64 {
        (**self).wall_ms()
    }
}

/// The production clock: tokio's `Instant` (the simulated clock under
/// madsim) for monotonic time, `SystemTime` (also simulated) for wall time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock moved only by [`ManualClock::advance_ms`] (unit tests).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
    fn wall_ms(&self) -> u64 {
        self.now_ms()
    }
}

#[derive(Debug)]
struct Skew {
    drift_ppm: i64,
    /// Base reading and skewed value at the last change of drift or jump, so
    /// a change never makes the clock leap backwards.
    anchor_base_ms: u64,
    anchor_skewed_ms: u64,
    /// Steps of the wall clock alone (NTP corrections).
    wall_step_ms: i64,
    /// Largest value returned so far: the monotonic clock never goes back.
    last_ms: u64,
}

impl Skew {
    fn skewed(&self, base_ms: u64) -> u64 {
        let elapsed = i128::from(base_ms.saturating_sub(self.anchor_base_ms));
        let scaled =
            elapsed * i128::from(DRIFT_PPM_ONE + self.drift_ppm) / i128::from(DRIFT_PPM_ONE);
        let value = i128::from(self.anchor_skewed_ms) + scaled;
        u64::try_from(value.max(0)).unwrap_or(u64::MAX)
    }

    fn reanchor(&mut self, base_ms: u64) {
        self.anchor_skewed_ms = self.skewed(base_ms).max(self.last_ms);
        self.anchor_base_ms = base_ms;
    }
}

/// Wraps a clock with a per-node offset, drift and jumps. madsim has one
/// global clock; this is where per-node skew comes from.
#[derive(Debug, Clone)]
pub struct SkewedClock<C> {
    base: C,
    skew: Arc<Mutex<Skew>>,
}

/// Changes a [`SkewedClock`] while its node runs.
#[derive(Debug, Clone)]
pub struct SkewHandle<C> {
    clock: SkewedClock<C>,
}

fn clamp_drift(drift_ppm: i64) -> i64 {
    drift_ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX)
}

impl<C: Clock + Clone> SkewedClock<C> {
    /// `offset_ms` is added to both clocks; `drift_ppm` (clamped to
    /// ±[`DRIFT_PPM_MAX`]) scales elapsed time.
    pub fn new(base: C, offset_ms: u64, drift_ppm: i64) -> (Self, SkewHandle<C>) {
        let base_ms = base.now_ms();
        let skew = Skew {
            drift_ppm: clamp_drift(drift_ppm),
            anchor_base_ms: base_ms,
            anchor_skewed_ms: base_ms.saturating_add(offset_ms),
            wall_step_ms: 0,
            last_ms: 0,
        };
        let clock = Self {
            base,
            skew: Arc::new(Mutex::new(skew)),
        };
        let handle = SkewHandle {
            clock: clock.clone(),
        };
        (clock, handle)
    }

    /// A clock with an offset in `0..=offset_ms_max` and a drift in
    /// `±drift_ppm_max`, drawn from the seeded `rng`.
    pub fn random(
        base: C,
        rng: &mut SplitMix64,
        offset_ms_max: u64,
        drift_ppm_max: i64,
    ) -> (Self, SkewHandle<C>) {
        let offset = rng.range_u64(0, offset_ms_max.saturating_add(1));
        let spread = clamp_drift(drift_ppm_max).unsigned_abs();
        let drift = rng.range_u64(0, spread * 2 + 1) as i64 - spread as i64;
        Self::new(base, offset, drift)
    }

    fn lock(&self) -> MutexGuard<'_, Skew> {
        self.skew.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Clock + Clone> SkewHandle<C> {
    /// Changes the drift from now on (the clock stays continuous).
    pub fn set_drift_ppm(&self, drift_ppm: i64) {
        let base_ms = self.clock.base.now_ms();
        let mut skew = self.clock.lock();
        skew.reanchor(base_ms);
        skew.drift_ppm = clamp_drift(drift_ppm);
    }

    /// Jumps both clocks forward (a VM pause, a suspended process).
    pub fn jump_forward_ms(&self, ms: u64) {
        let base_ms = self.clock.base.now_ms();
        let mut skew = self.clock.lock();
        skew.reanchor(base_ms);
        skew.anchor_skewed_ms = skew.anchor_skewed_ms.saturating_add(ms);
    }

    /// Steps the wall clock only, either way (an NTP correction). The
    /// monotonic clock is unaffected, as on a real host.
    pub fn step_wall_ms(&self, delta_ms: i64) {
        let mut skew = self.clock.lock();
        skew.wall_step_ms = skew.wall_step_ms.saturating_add(delta_ms);
    }

    pub fn drift_ppm(&self) -> i64 {
        self.clock.lock().drift_ppm
    }
}

impl<C: Clock + Clone> Clock for SkewedClock<C> {
    fn now_ms(&self) -> u64 {
        let base_ms = self.base.now_ms();
        let mut skew = self.lock();
        let value = skew.skewed(base_ms).max(skew.last_ms);
        skew.last_ms = value;
        value
    }

    fn wall_ms(&self) -> u64 {
        let base_ms = self.base.now_ms();
        let base_wall = self.base.wall_ms();
        let skew = self.lock();
        // Wall time carries the same offset, drift and jumps as the monotonic
        // clock, plus its own steps.
        let skew_ms = i128::from(skew.skewed(base_ms)) - i128::from(base_ms);
        let value = i128::from(base_wall) + skew_ms + i128::from(skew.wall_step_ms);
        u64::try_from(value.max(0)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_offset_and_jumps() {
        let base = ManualClock::new(1_000);
        let (clock, handle) = SkewedClock::new(base.clone(), 500, 100_000);
        assert_eq!(clock.now_ms(), 1_500);
        base.advance_ms(1_000);
        assert_eq!(clock.now_ms(), 2_600, "+10% drift");
        handle.set_drift_ppm(-100_000);
        base.advance_ms(1_000);
        assert_eq!(clock.now_ms(), 3_500, "-10% drift, continuous");
        handle.jump_forward_ms(10_000);
        assert_eq!(clock.now_ms(), 13_500);
        handle.set_drift_ppm(10 * DRIFT_PPM_ONE);
        assert_eq!(handle.drift_ppm(), DRIFT_PPM_MAX, "clamped");
    }

    #[test]
    fn monotonic_never_goes_back_but_wall_may() {
        let base = ManualClock::new(0);
        let (clock, handle) = SkewedClock::new(base.clone(), 0, 0);
        base.advance_ms(100);
        let before_wall = clock.wall_ms();
        let before = clock.now_ms();
        handle.step_wall_ms(-50);
        assert_eq!(clock.now_ms(), before);
        assert_eq!(clock.wall_ms(), before_wall - 50);
    }

    #[test]
    fn random_skew_is_seeded_and_bounded() {
        for seed in 0..100 {
            let (a, ha) = SkewedClock::random(
                ManualClock::new(0),
                &mut SplitMix64::new(seed),
                1_000,
                100_000,
            );
            let (b, _) = SkewedClock::random(
                ManualClock::new(0),
                &mut SplitMix64::new(seed),
                1_000,
                100_000,
            );
            assert_eq!(a.now_ms(), b.now_ms());
            assert!(a.now_ms() <= 1_000);
            assert!(ha.drift_ppm().abs() <= 100_000);
        }
    }

    #[tokio::test]
    async fn tokio_clock_moves_forward() {
        let clock = TokioClock::new();
        let t0 = clock.now_ms();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(clock.now_ms() >= t0 + 20);
        assert!(clock.wall_ms() > 1_600_000_000_000);
    }
}
