//! Comparing two ascending block maps: the heart of ListChangedBlocks.

use crate::block::{BlockIndex, Digest};
use std::iter::Peekable;

/// One index where two maps differ: what each side holds there, if anything.
pub(crate) struct Difference<A, B> {
    pub first: Option<A>,
    pub second: Option<B>,
}

/// Walks two ascending `(index, digest, value)` streams and yields the indexes whose
/// content differs, including indexes present on one side only.
pub(crate) struct Changed<I: Iterator, J: Iterator> {
    first: Peekable<I>,
    second: Peekable<J>,
}

pub(crate) fn changed<A, B, E, I, J>(first: I, second: J) -> Changed<I, J>
where
    I: Iterator<Item = Result<(BlockIndex, Digest, A), E>>,
    J: Iterator<Item = Result<(BlockIndex, Digest, B), E>>,
{
    Changed {
        first: first.peekable(),
        second: second.peekable(),
    }
}

impl<A, B, E, I, J> Iterator for Changed<I, J>
where
    I: Iterator<Item = Result<(BlockIndex, Digest, A), E>>,
    J: Iterator<Item = Result<(BlockIndex, Digest, B), E>>,
{
    type Item = Result<(BlockIndex, Difference<A, B>), E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let a = match peek_index(&mut self.first) {
                Ok(a) => a,
                Err(e) => return Some(Err(e)),
            };
            let b = match peek_index(&mut self.second) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            let index = match (a, b) {
                (None, None) => return None,
                (Some(x), Some(y)) => x.min(y),
                (Some(x), None) | (None, Some(x)) => x,
            };
            let one = take_if(&mut self.first, a == Some(index));
            let two = take_if(&mut self.second, b == Some(index));
            if let (Some((_, d1, _)), Some((_, d2, _))) = (&one, &two) {
                if d1 == d2 {
                    continue;
                }
            }
            let difference = Difference {
                first: one.map(|(_, _, v)| v),
                second: two.map(|(_, _, v)| v),
            };
            return Some(Ok((index, difference)));
        }
    }
}

/// The index of the next item, or the error it holds (consumed).
fn peek_index<T, E>(
    it: &mut Peekable<impl Iterator<Item = Result<(BlockIndex, Digest, T), E>>>,
) -> Result<Option<BlockIndex>, E> {
    match it.peek() {
        None => Ok(None),
        Some(Ok((index, _, _))) => Ok(Some(*index)),
        Some(Err(_)) => match it.next() {
            Some(Err(e)) => Err(e),
            _ => unreachable!("peeked an error"),
        },
    }
}

/// The next item (known to be `Ok`), when `cond` holds.
fn take_if<T, E>(
    it: &mut Peekable<impl Iterator<Item = Result<(BlockIndex, Digest, T), E>>>,
    cond: bool,
) -> Option<(BlockIndex, Digest, T)> {
    if cond {
        it.next().and_then(Result::ok)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(u64, u8)]) -> Vec<Result<(BlockIndex, Digest, u64), ()>> {
        items
            .iter()
            .map(|&(i, d)| Ok((BlockIndex(i), Digest([d; 32]), i)))
            .collect()
    }

    #[test]
    fn yields_new_changed_and_removed_indexes_but_not_equal_ones() {
        let first = map(&[(1, 1), (2, 2), (4, 4), (9, 9)]);
        let second = map(&[(0, 0), (2, 2), (4, 5), (9, 9), (12, 1)]);
        let got: Vec<_> = changed(first.into_iter(), second.into_iter())
            .map(|r| {
                let (i, d) = r.unwrap();
                (i.0, d.first.is_some(), d.second.is_some())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, false, true),
                (1, true, false),
                (4, true, true),
                (12, false, true)
            ]
        );
    }

    #[test]
    fn passes_errors_through() {
        let first: Vec<Result<(BlockIndex, Digest, u64), &str>> = vec![Err("boom")];
        let mut it = changed(
            first.into_iter(),
            std::iter::empty::<Result<(BlockIndex, Digest, u64), &str>>(),
        );
        assert_eq!(it.next().map(|r| r.err()), Some(Some("boom")));
    }
}
