//! Data order: the permutation of training examples in each epoch is a pure
//! function of (run seed, epoch), so a run resumed at epoch e from a
//! checkpoint sees exactly the batches an uninterrupted run would.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;

use crate::engine::rng;

/// The order of `n` training examples in `epoch` (0-based) of a run seeded
/// with `seed`.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..n as u32).collect();
    idx.shuffle(&mut rng::stream(seed, "epoch-order", epoch as u64));
    idx
}

/// The batches of one epoch as index tensors on the device; the last batch
/// may be short (as PyTorch's `drop_last=False`).
pub struct Batches {
    order: Tensor,
    n: usize,
    batch_size: usize,
    next: usize,
}

impl Batches {
    pub fn new(
        seed: u64,
        epoch: usize,
        n: usize,
        batch_size: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let order = Tensor::from_vec(epoch_order(seed, epoch, n), n, device)?;
        Ok(Self {
            order,
            n,
            batch_size: batch_size.max(1),
            next: 0,
        })
    }

    /// Number of batches in an epoch of `n` examples.
    pub fn count(n: usize, batch_size: usize) -> usize {
        n.div_ceil(batch_size.max(1))
    }
}

impl Iterator for Batches {
    type Item = candle_core::Result<Tensor>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.n {
            return None;
        }
        let len = self.batch_size.min(self.n - self.next);
        let b = self.order.narrow(0, self.next, len);
        self.next += len;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let a = epoch_order(3, 0, 100);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert_eq!(a, epoch_order(3, 0, 100));
        assert_ne!(a, epoch_order(3, 1, 100));
        assert_ne!(a, epoch_order(4, 0, 100));
    }

    #[test]
    fn batches_cover_the_epoch_once() {
        let b: Vec<Vec<u32>> = Batches::new(1, 2, 10, 4, &Device::Cpu)
            .unwrap()
            .map(|t| t.unwrap().to_vec1::<u32>().unwrap())
            .collect();
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(b.concat(), epoch_order(1, 2, 10));
        assert_eq!(Batches::count(10, 4), 3);
    }
}
