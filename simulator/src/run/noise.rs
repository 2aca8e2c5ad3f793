//! GNSS error as a phone reports it: a position off by about the `accuracy` it claims, errors
//! that drift rather than jump from fix to fix, now and then a poor fix, and rarely an outlier
//! hundreds of metres away (like the real 470 m jump in the Munich trace). [`Drift`] is the
//! slow wander of a parked receiver alone, shared by the server's geofence tests and
//! `waymark-sim truth`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::geo::{self, LatLon};

/// Android's `accuracy` is the radius holding the true position with 68 % probability. For an
/// error that is normal with deviation σ on each axis that radius is σ·√(−2 ln 0.32) ≈ 1.51 σ.
pub const ACCURACY_PER_SIGMA: f64 = 1.509_592;
/// How long an error takes to decorrelate: consecutive fixes a second apart err alike.
const CORRELATION_S: f64 = 20.0;
/// Open sky: the accuracy of an ordinary fix.
const GOOD_ACCURACY_M: (f64, f64) = (4.0, 10.0);
/// Urban canyons and trees: a few fixes in a hundred.
const POOR_ACCURACY_M: (f64, f64) = (15.0, 40.0);
const POOR_CHANCE: f64 = 0.03;
/// A multipath or re-acquisition outlier that still claims a good accuracy.
const OUTLIER_CHANCE: f64 = 0.002;
const OUTLIER_MIN_M: f64 = 400.0;
const OUTLIER_MAX_M: f64 = 5_000.0;
/// An outlier must look faster than the server's jump filter (100 m/s) from the fix before it,
/// with room to spare, so that the server marks it.
const OUTLIER_IMPLIED_MPS: f64 = 150.0;

/// What the phone reports for one fix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noisy {
    pub point: LatLon,
    pub accuracy: f64,
    pub outlier: bool,
}

/// One phone's error state.
#[derive(Debug, Clone)]
pub struct Gnss {
    enabled: bool,
    /// The error in units of σ, north and east, carried from fix to fix.
    z: (f64, f64),
}

impl Gnss {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            z: (0.0, 0.0),
        }
    }

    /// The reported fix for the true position `truth`, `dt_wall_s` after the previous fix as
    /// the server sees it (infinite for the first). Without noise the truth is reported with an
    /// accuracy of 5–10 m.
    pub fn observe<R: Rng>(&mut self, truth: LatLon, dt_wall_s: f64, rng: &mut R) -> Noisy {
        if !self.enabled {
            return Noisy {
                point: truth,
                accuracy: rng.gen_range(5.0..10.0),
                outlier: false,
            };
        }
        // AR(1): each axis stays N(0, 1) overall, but changes little between close fixes.
        let rho = (-dt_wall_s.max(0.0) / CORRELATION_S).exp();
        let fresh = (1.0 - rho * rho).sqrt();
        let (n, e) = standard_normal_pair(rng);
        self.z = (rho * self.z.0 + fresh * n, rho * self.z.1 + fresh * e);

        let range = if rng.gen_bool(POOR_CHANCE) {
            POOR_ACCURACY_M
        } else {
            GOOD_ACCURACY_M
        };
        let accuracy = rng.gen_range(range.0..range.1);
        let sigma = accuracy / ACCURACY_PER_SIGMA;
        let off = geo::destination(truth, 0.0, self.z.0 * sigma);
        let point = geo::destination(off, 90.0, self.z.1 * sigma);
        // The first fix has nothing before it to jump from.
        if dt_wall_s.is_finite() && rng.gen_bool(OUTLIER_CHANCE) {
            let distance = (OUTLIER_IMPLIED_MPS * dt_wall_s).clamp(OUTLIER_MIN_M, OUTLIER_MAX_M);
            let bearing = rng.gen_range(0.0..360.0);
            return Noisy {
                point: geo::destination(truth, bearing, distance),
                accuracy: rng.gen_range(GOOD_ACCURACY_M.0..GOOD_ACCURACY_M.1),
                outlier: true,
            };
        }
        Noisy {
            point,
            accuracy,
            outlier: false,
        }
    }
}

/// Slowly drifting GPS error, as a receiver's is: each axis an Ornstein–Uhlenbeck process
/// (AR(1) when sampled) with standard deviation `sigma` metres and correlation time `tau`
/// seconds, starting from its stationary distribution. Seeded, so a run can be repeated.
#[derive(Debug, Clone)]
pub struct Drift {
    rng: StdRng,
    sigma: f64,
    tau: f64,
    north: f64,
    east: f64,
}

impl Drift {
    pub fn new(seed: u64, sigma: f64, tau: f64) -> Drift {
        let mut drift = Drift {
            rng: StdRng::seed_from_u64(seed),
            sigma,
            tau,
            north: 0.0,
            east: 0.0,
        };
        drift.north = sigma * drift.normal();
        drift.east = sigma * drift.normal();
        drift
    }

    fn normal(&mut self) -> f64 {
        standard_normal_pair(&mut self.rng).0
    }

    /// The error `dt` seconds on, metres north and east.
    pub fn step(&mut self, dt: f64) -> (f64, f64) {
        let keep = (-dt / self.tau).exp();
        let fresh = self.sigma * (1.0 - keep * keep).sqrt();
        self.north = keep * self.north + fresh * self.normal();
        self.east = keep * self.east + fresh * self.normal();
        (self.north, self.east)
    }
}

/// Two independent N(0, 1) draws (Box–Muller).
fn standard_normal_pair<R: Rng>(rng: &mut R) -> (f64, f64) {
    // 1 − u lies in (0, 1], so the logarithm is finite.
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    let r = (-2.0 * u.ln()).sqrt();
    let theta = std::f64::consts::TAU * v;
    (r * theta.cos(), r * theta.sin())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn errors_match_the_claimed_accuracy() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut gnss = Gnss::new(true);
        let truth = LatLon::new(48.137, 11.575);
        let (mut within, mut total, mut outliers, mut poor) = (0, 0, 0, 0);
        let mut sum_sq_sigma = 0.0;
        for _ in 0..20_000 {
            // Far apart in time, so the errors are nearly independent.
            let fix = gnss.observe(truth, 120.0, &mut rng);
            if fix.outlier {
                outliers += 1;
                let d = geo::haversine_m(truth, fix.point);
                assert!(
                    (OUTLIER_MIN_M - 1.0..=OUTLIER_MAX_M + 1.0).contains(&d),
                    "{d}"
                );
                continue;
            }
            total += 1;
            if fix.accuracy > GOOD_ACCURACY_M.1 {
                poor += 1;
            }
            let d = geo::haversine_m(truth, fix.point);
            assert!(
                d < 6.0 * fix.accuracy,
                "{d} m off at accuracy {}",
                fix.accuracy
            );
            if d <= fix.accuracy {
                within += 1;
            }
            sum_sq_sigma += (d / (fix.accuracy / ACCURACY_PER_SIGMA)).powi(2);
        }
        // 68 % within the accuracy radius, as Android defines it.
        let share = f64::from(within) / f64::from(total);
        assert!((0.65..0.71).contains(&share), "{share}");
        // The squared distance over σ² is chi-squared with two degrees of freedom: mean 2.
        let mean = sum_sq_sigma / f64::from(total);
        assert!((1.9..2.1).contains(&mean), "{mean}");
        // Poor fixes are occasional and outliers rare.
        let poor_share = f64::from(poor) / f64::from(total);
        assert!((0.02..0.04).contains(&poor_share), "{poor_share}");
        assert!((10..=80).contains(&outliers), "{outliers}");
    }

    #[test]
    fn close_fixes_err_alike() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut gnss = Gnss::new(true);
        let truth = LatLon::new(53.4, -2.9);
        let mut prev = gnss.observe(truth, 1.0, &mut rng);
        for _ in 0..2_000 {
            let fix = gnss.observe(truth, 1.0, &mut rng);
            let good = |f: &Noisy| !f.outlier && f.accuracy <= GOOD_ACCURACY_M.1;
            if good(&fix) && good(&prev) {
                // A second apart the error moves by a fraction of σ, not by the whole error.
                // (A poor fix stands out by up to its accuracy, as real ones do.)
                let moved = geo::haversine_m(prev.point, fix.point);
                assert!(moved < 30.0, "{moved}");
            }
            prev = fix;
        }
    }

    #[test]
    fn outliers_outrun_the_jump_filter() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut gnss = Gnss::new(true);
        let truth = LatLon::new(45.2, 13.7);
        let mut seen = 0;
        for i in 0..50_000 {
            let dt = [1.0, 5.0, 30.0][i % 3];
            let fix = gnss.observe(truth, dt, &mut rng);
            if fix.outlier {
                seen += 1;
                let d = geo::haversine_m(truth, fix.point);
                assert!(d / dt > 100.0, "{d} m in {dt} s would pass the filter");
            }
        }
        assert!(seen > 0);
    }

    #[test]
    fn a_first_fix_is_never_an_outlier() {
        let mut rng = StdRng::seed_from_u64(10);
        for _ in 0..5_000 {
            let fix = Gnss::new(true).observe(LatLon::new(45.2, 13.7), f64::INFINITY, &mut rng);
            assert!(!fix.outlier);
        }
    }

    #[test]
    fn a_drift_has_its_deviation_and_changes_slowly() {
        let mut drift = Drift::new(5, 7.0, 120.0);
        let (mut sum_sq, mut largest_step) = (0.0, 0.0f64);
        let mut prev = drift.step(10.0);
        let n = 20_000;
        for _ in 0..n {
            let next = drift.step(10.0);
            sum_sq += next.0 * next.0 + next.1 * next.1;
            largest_step = largest_step.max((next.0 - prev.0).hypot(next.1 - prev.1));
            prev = next;
        }
        // Two axes of σ 7 m: a mean square of 2σ² = 98 m².
        let mean_sq = sum_sq / f64::from(n);
        assert!((80.0..116.0).contains(&mean_sq), "{mean_sq}");
        // Ten seconds apart with a two-minute correlation time, fixes move by little.
        assert!(largest_step < 20.0, "{largest_step}");
        let again: Vec<_> = {
            let mut d = Drift::new(5, 7.0, 120.0);
            (0..3).map(|_| d.step(10.0)).collect()
        };
        let mut d = Drift::new(5, 7.0, 120.0);
        assert_eq!(again, (0..3).map(|_| d.step(10.0)).collect::<Vec<_>>());
    }

    #[test]
    fn without_noise_the_truth_is_reported() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut gnss = Gnss::new(false);
        let truth = LatLon::new(45.2, 13.7);
        for _ in 0..1_000 {
            let fix = gnss.observe(truth, 1.0, &mut rng);
            assert_eq!(fix.point, truth);
            assert!(!fix.outlier && (5.0..10.0).contains(&fix.accuracy));
        }
    }
}
