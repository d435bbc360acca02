//! The event loop's one ordered structure of deadlines.
//!
//! Every conversation (and every other timed thing the loop owns) has at most one entry, keyed
//! by its slot number: the earliest time it needs attention. The loop sleeps until the
//! smallest entry; nothing is swept periodically. This is an indexed binary min-heap: setting,
//! moving and removing an entry are O(log n) and never allocate once the vectors have grown to
//! the number of slots in use.

/// Milliseconds on the loop's monotonic clock.
pub type Millis = u64;

const NONE: u32 = u32::MAX;

#[derive(Default)]
pub struct TimerHeap {
    /// (deadline, key) in heap order.
    heap: Vec<(Millis, u32)>,
    /// For each key, its index in `heap`, or `NONE`.
    pos: Vec<u32>,
}

impl TimerHeap {
    pub fn new() -> TimerHeap {
        TimerHeap::default()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline and its key.
    pub fn peek(&self) -> Option<(Millis, usize)> {
        self.heap.first().map(|&(t, k)| (t, k as usize))
    }

    pub fn get(&self, key: usize) -> Option<Millis> {
        match self.pos.get(key) {
            Some(&p) if p != NONE => Some(self.heap[p as usize].0),
            _ => None,
        }
    }

    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: usize, at: Millis) {
        if key >= self.pos.len() {
            self.pos.resize(key + 1, NONE);
        }
        let p = self.pos[key];
        if p == NONE {
            self.heap.push((at, key as u32));
            let i = self.heap.len() - 1;
            self.pos[key] = i as u32;
            self.sift_up(i);
        } else {
            let i = p as usize;
            let old = self.heap[i].0;
            self.heap[i].0 = at;
            if at < old {
                self.sift_up(i);
            } else if at > old {
                self.sift_down(i);
            }
        }
    }

    pub fn remove(&mut self, key: usize) {
        let Some(&p) = self.pos.get(key) else { return };
        if p == NONE {
            return;
        }
        let i = p as usize;
        let last = self.heap.len() - 1;
        self.swap(i, last);
        self.heap.pop();
        self.pos[key] = NONE;
        if i < self.heap.len() {
            self.sift_down(i);
            self.sift_up(i);
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<usize> {
        match self.peek() {
            Some((t, k)) if t <= now => {
                self.remove(k);
                Some(k)
            }
            _ => None,
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u32;
        self.pos[self.heap[b].1 as usize] = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[i].0 >= self.heap[parent].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            let r = l + 1;
            let mut m = i;
            if l < n && self.heap[l].0 < self.heap[m].0 {
                m = l;
            }
            if r < n && self.heap[r].0 < self.heap[m].0 {
                m = r;
            }
            if m == i {
                break;
            }
            self.swap(i, m);
            i = m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_after_moves_and_removals() {
        let mut h = TimerHeap::new();
        // A deterministic shuffle of deadlines, then moves and removals.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut expect = vec![None; 500];
        for (k, e) in expect.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = x % 10_000;
            h.set(k, t);
            *e = Some(t);
        }
        for k in (0..500).step_by(3) {
            h.set(k, 20_000 - k as u64);
            expect[k] = Some(20_000 - k as u64);
        }
        for k in (0..500).step_by(7) {
            h.remove(k);
            expect[k] = None;
        }
        for (k, e) in expect.iter().enumerate() {
            assert_eq!(h.get(k), *e);
        }
        let mut last = 0;
        let mut seen = 0;
        while let Some((t, k)) = h.peek() {
            assert!(t >= last);
            assert_eq!(expect[k], Some(t));
            last = t;
            assert_eq!(h.pop_due(u64::MAX), Some(k));
            seen += 1;
        }
        assert_eq!(seen, expect.iter().filter(|e| e.is_some()).count());
    }

    #[test]
    fn pop_due_respects_now() {
        let mut h = TimerHeap::new();
        h.set(3, 100);
        h.set(1, 50);
        assert_eq!(h.pop_due(49), None);
        assert_eq!(h.pop_due(50), Some(1));
        assert_eq!(h.pop_due(99), None);
        assert_eq!(h.pop_due(100), Some(3));
        assert!(h.is_empty());
        h.remove(3); // removing an absent key is a no-op
    }
}
