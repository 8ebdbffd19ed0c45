//! The node-wide budget for large work (`server.max_buffered_bytes`, default 64 MiB), so the
//! node's memory has a bound that does not grow with the number of jobs at once.
//!
//! Per-call and per-request limits alone do not bound the node: each of several jobs may hold a
//! 16 MiB body (and the copies made of it: the parsed data, the container's input, its answer)
//! and each of several container calls may buffer up to its `max_output_size`. Two such jobs at
//! once took the node past 150 MB in the soak. So:
//! - a request body being read may hold [`SMALL`] bytes without asking; past that, each chunk
//!   takes its size from the budget, and a body the budget cannot hold is refused at once (503
//!   with `Retry-After`), so clients uploading at once cannot hold more than the budget;
//! - an off-chain job whose body is larger than [`SMALL`] reserves [`COPIES`] × its size (at most
//!   the whole budget; what reading its body took counts) for as long as it runs; when the budget
//!   cannot give it, the job is refused with 503 and `Retry-After` before anything is done;
//! - a container call may buffer [`SMALL`] bytes, or as many as the input it was sent (its job's
//!   reservation counts them), without asking; past that, each chunk it reads takes its size from
//!   the budget until the call has been read and parsed. A call the budget cannot serve fails at
//!   once with an error that names the setting.
//!
//! Small jobs never touch the budget, so a flood of large output cannot refuse a normal client.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a job or call may hold without asking the budget.
pub const SMALL: usize = 1 << 20;
/// How many copies of a large body a job is assumed to hold (body, parsed data, container input,
/// container answer).
pub const COPIES: usize = 4;
/// Budget unit.
const UNIT: usize = 1024;

/// The budget: a semaphore of KiB.
#[derive(Debug, Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: u32,
}

/// Bytes taken from the budget, given back when dropped.
#[derive(Debug, Default)]
pub struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Budget {
    /// A budget of `bytes` (at least 1 MiB).
    pub fn new(bytes: u64) -> Self {
        let total = u32::try_from(bytes.max(SMALL as u64) / UNIT as u64).unwrap_or(u32::MAX >> 3);
        let total = total.min(Semaphore::MAX_PERMITS as u32);
        Self {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// The budget, in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.total) * UNIT as u64
    }

    /// Takes `bytes` (at most the whole budget) into `held`, without waiting; `false` when the
    /// budget does not have them now.
    pub fn take(&self, held: &mut Held, bytes: usize) -> bool {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).min(self.total);
        if units == 0 {
            return true;
        }
        match self.units.clone().try_acquire_many_owned(units) {
            Ok(permit) => {
                held.permits.push(permit);
                held.bytes = held.bytes.saturating_add(units as usize * UNIT);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes what growing a buffer from `from` to `to` bytes adds past its first `free` bytes
    /// (free of the budget: small work never waits for it); `false` when the budget does not have
    /// them now.
    pub fn grow(&self, held: &mut Held, free: usize, from: usize, to: usize) -> bool {
        to <= free || self.take(held, to - free.max(from))
    }

    /// What a job whose body is `size` bytes reserves for its life: [`COPIES`] × its size (at
    /// most the whole budget), of which `held` (what reading its body took) is already taken;
    /// nothing more for a small body.
    pub fn reserve_job(&self, size: usize, mut held: Held) -> Result<Held, OverBudget> {
        let want = size.saturating_mul(COPIES).min(self.bytes() as usize);
        let more = want.saturating_sub(held.bytes);
        if size > SMALL && more > 0 && !self.take(&mut held, more) {
            return Err(OverBudget { budget: self.bytes() });
        }
        Ok(held)
    }
}

/// The node's budget for large work is in use (HTTP 503 with `Retry-After`).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the node is busy with other large jobs: their data and output use its whole buffer ({budget} bytes, server.max_buffered_bytes); retry shortly"
)]
pub struct OverBudget {
    /// `server.max_buffered_bytes`.
    pub budget: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_jobs_share_the_budget_and_small_ones_never_ask() {
        let budget = Budget::new(64 << 20);
        // Reading the body took 15 MiB; the job takes the rest of its copies: the whole budget.
        let mut read = Held::default();
        assert!(budget.take(&mut read, 15 << 20));
        let big = budget.reserve_job(16 << 20, read).expect("the first large job fits");
        assert!(
            budget.reserve_job(2 << 20, Held::default()).is_err(),
            "a second large job waits for the first"
        );
        let small: Vec<Held> = (0..1000)
            .map(|_| budget.reserve_job(SMALL, Held::default()).unwrap())
            .collect();
        drop(small);
        drop(big);
        let a = budget.reserve_job(4 << 20, Held::default()).unwrap();
        let b = budget.reserve_job(4 << 20, Held::default()).unwrap();
        let mut held = Held::default();
        assert!(budget.take(&mut held, 31 << 20));
        assert!(!budget.take(&mut held, 2 << 20), "past the budget");
        drop((a, b));
        assert!(budget.take(&mut held, 2 << 20));
    }

    #[test]
    fn a_growing_buffer_takes_only_what_it_adds_past_its_free_part() {
        let budget = Budget::new(4 << 20);
        let mut held = Held::default();
        // Within the free part: nothing taken, however full the budget.
        let mut all = Held::default();
        assert!(budget.take(&mut all, 4 << 20));
        assert!(budget.grow(&mut held, SMALL, 0, SMALL));
        drop(all);
        // Past it: only the growth past the free part.
        assert!(budget.grow(&mut held, SMALL, SMALL - 10, SMALL + (1 << 20)));
        assert!(budget.grow(&mut held, SMALL, SMALL + (1 << 20), SMALL + (3 << 20)));
        assert!(
            !budget.grow(&mut held, SMALL, SMALL + (3 << 20), SMALL + (5 << 20)),
            "past the budget"
        );
    }
}
